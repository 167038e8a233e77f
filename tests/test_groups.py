"""Celebrity datasets (paper Result 6): a minority in the main format plus celebrities in theirs."""

import dataclasses
import hashlib
import json
import shutil
from collections import Counter
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from biolab.cli import CONF_DIR, compose
from biolab.data import dataset as dataset_mod
from biolab.data.check import check_dataset
from biolab.data.dataset import CELEBRITY_KEYS, DataConfig, generate, load_dataset, write_dataset
from biolab.data.people import ATTRIBUTES, CELEBRITY, GROUPS, MINORITY, sample_groups, sample_people
from biolab.data.pools import FILES, default_pool_dir
from biolab.errors import ConfigError
from biolab.io import write_json

CEL_PRESETS = sorted(p.stem for p in (CONF_DIR / "data").glob("*_cel.yaml"))


def lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


def rows(path: Path) -> list[dict]:
    return [json.loads(x) for x in lines(path)]


def write(tmp_path, name="d", **kw):
    cfg = DataConfig(**{"n_people": 30, "n_celebrities": 20, **kw})
    out = tmp_path / name
    return out, write_dataset(cfg, out, progress=False)


@pytest.fixture(scope="module")
def small_pools(tmp_path_factory):
    """A pools folder with 2 x 3 x 4 = 24 full names, so that random names collide often."""
    root = tmp_path_factory.mktemp("pools")
    keep = {"first_name": 2, "middle_name": 3, "last_name": 4}
    for pool, file in FILES.items():
        values = (default_pool_dir() / file).read_text(encoding="utf-8").splitlines()
        (root / file).write_text("\n".join(values[: keep.get(pool, len(values))]) + "\n", encoding="utf-8")
    return str(root)


def test_the_groups_are_declared_once():
    assert GROUPS == ("celebrity", "minority") == (CELEBRITY, MINORITY)


def test_the_minority_is_the_people_without_celebrities(pools):
    people = sample_groups(25, 15, 3, pools)
    alone = sample_people(25, 3, pools)
    assert people[:25] == [dataclasses.replace(p, group=MINORITY, split="test") for p in alone]
    celebrities = people[25:]
    assert [p.id for p in celebrities] == list(range(25, 40))
    assert {(p.group, p.split) for p in celebrities} == {(CELEBRITY, "train")}
    assert not {p.full_name for p in celebrities} & {p.full_name for p in alone}
    assert len({p.full_name for p in people}) == 40


@pytest.mark.parametrize("seed", range(5))
def test_names_never_collide_in_a_crowded_name_space(pools, seed):
    names = {"first_name": 2, "middle_name": 2, "last_name": 3}
    tiny = dataclasses.replace(pools, **{k: getattr(pools, k)[:n] for k, n in names.items()})
    people = sample_groups(5, 7, seed, tiny)  # all 12 names of the space
    assert len({p.full_name for p in people}) == 12
    assert sample_groups(5, 7, seed, tiny) == people
    with pytest.raises(ConfigError, match="exceeds the 12 distinct full names"):
        sample_groups(5, 8, seed, tiny)


def test_a_dataset_from_small_pools_has_disjoint_names_and_passes_the_check(tmp_path, small_pools):
    out, meta = write(tmp_path, n_people=10, n_celebrities=14, pools=small_pools)  # the whole space
    people = rows(out / "people.jsonl")
    groups = {g: {p["full_name"] for p in people if p["group"] == g} for g in GROUPS}
    assert len(groups[MINORITY]) == 10 and len(groups[CELEBRITY]) == 14
    assert not groups[MINORITY] & groups[CELEBRITY]
    assert check_dataset(out)[0] == []
    with pytest.raises(ConfigError, match="n_people \\+ data.n_celebrities = 25 exceeds the 24"):
        write_dataset(DataConfig(n_people=10, n_celebrities=15, pools=small_pools), tmp_path / "e")
    assert not (tmp_path / "e").exists()


def test_groups_splits_entries_and_counts(tmp_path):
    out, meta = write(tmp_path, multi=1, permute=1)
    people = rows(out / "people.jsonl")
    assert [p["id"] for p in people] == list(range(50))
    want = [(MINORITY, "test")] * 30 + [(CELEBRITY, "train")] * 20
    assert [(p["group"], p["split"]) for p in people] == want
    entries = Counter(b["person_id"] for b in rows(out / "bios.jsonl"))
    assert all(entries[i] == 1 for i in range(30)) and all(entries[i] == 5 for i in range(30, 50))
    assert meta["counts"] == {
        "people": 50, "train": 20, "test": 30, "bios": 130, "entries_per_person": 1, "qa": 300,
        "groups": {
            "celebrity": {"people": 20, "bios": 100, "entries_per_person": 5},
            "minority": {"people": 30, "bios": 30, "entries_per_person": 1},
        },
    }  # fmt: skip
    assert {k: meta["config"][k] for k in CELEBRITY_KEYS} == {
        "n_celebrities": 20, "celebrity_style": "bioS", "celebrity_multi": 5, "celebrity_permute": 1,
        "celebrity_fullname": False,
    }  # fmt: skip


def _order(bio: dict) -> list[str]:
    return sorted(ATTRIBUTES, key=lambda a: bio["spans"][a][0])


def test_each_group_gets_its_own_format_and_spans_hold_the_values(tmp_path):
    out, _ = write(tmp_path, fullname=True)  # a fixed-order fullname minority, pronoun celebrities
    people = {p["id"]: p for p in rows(out / "people.jsonl")}
    orders = {g: set() for g in GROUPS}
    for b in rows(out / "bios.jsonl"):
        p = people[b["person_id"]]
        for a in ATTRIBUTES:
            s, e = b["spans"][a]
            assert b["text"][s:e] == p[a]
        assert all(b["text"][s:e] == p["full_name"] for s, e in b["spans"]["name"])
        assert len(b["spans"]["name"]) == (6 if p["group"] == MINORITY else 1)
        orders[p["group"]].add(tuple(_order(b)))
    assert orders[MINORITY] == {ATTRIBUTES}
    assert len(orders[CELEBRITY]) > 10  # each entry its own shuffled order


def test_bioR_celebrities_render_through_render_chunk(tmp_path):
    out, meta = write(tmp_path, celebrity_style="bioR", celebrity_permute=0)
    assert meta["counts"]["groups"]["celebrity"]["bios"] == 100
    assert check_dataset(out)[0] == []
    loaded = load_dataset(out, verify=True)
    assert [b.to_json() for b in generate(loaded.config).bios] == [b.to_json() for b in loaded.bios]


@pytest.mark.parametrize(
    "kw",
    [
        {"style": "bioS", "permute": 1, "fullname": True},
        {"style": "bioS", "multi": 2},
        {"style": "bioR"},
        {"style": "bioR", "celebrity_style": "bioR", "celebrity_permute": 0},
    ],
)
def test_the_minority_bios_are_the_bytes_of_the_dataset_without_celebrities(tmp_path, monkeypatch, kw):
    monkeypatch.setattr(dataset_mod, "CHUNK", 8)  # several chunks in each group
    grouped, _ = write(tmp_path, "grouped", **kw)
    alone = tmp_path / "alone"
    write_dataset(DataConfig(n_people=30, **kw), alone, progress=False)
    entries = DataConfig(n_people=30, **kw).entries_per_person
    assert lines(grouped / "bios.jsonl")[: 30 * entries] == lines(alone / "bios.jsonl")
    assert [p["person_id"] for p in rows(grouped / "bios.jsonl")[30 * entries :]] == sorted(
        [i for i in range(30, 50)] * 5
    )
    people = rows(grouped / "people.jsonl")[:30]
    assert people == [{**p, "group": MINORITY, "split": "test"} for p in rows(alone / "people.jsonl")]


def test_train_qa_is_exactly_the_celebrities_qa(tmp_path):
    out, _ = write(tmp_path)
    people = {p["id"]: p for p in rows(out / "people.jsonl")}
    qa = rows(out / "qa.jsonl")
    assert [q["person_id"] for q in qa] == [i for i in range(50) for _ in ATTRIBUTES]
    train = {(q["person_id"], q["attribute"]) for q in qa if q["split"] == "train"}
    assert train == {(i, a) for i, p in people.items() if p["group"] == CELEBRITY for a in ATTRIBUTES}
    assert all(q["split"] == "test" for q in qa if people[q["person_id"]]["group"] == MINORITY)


def test_same_config_same_bytes_any_workers(tmp_path, monkeypatch):
    monkeypatch.setattr(dataset_mod, "CHUNK", 8)
    cfg = DataConfig(n_people=30, n_celebrities=25, permute=1)
    a = write_dataset(cfg, tmp_path / "a", progress=False)
    b = write_dataset(cfg, tmp_path / "b", progress=False)
    c = write_dataset(cfg, tmp_path / "c", progress=False, workers=2)
    assert a["sha256"] == b["sha256"] == c["sha256"]
    for f in ("people.jsonl", "bios.jsonl", "qa.jsonl", "meta.json"):
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "c" / f).read_bytes()
    loaded = load_dataset(tmp_path / "a", verify=True)
    fresh = generate(cfg)
    assert loaded.people == fresh.people and loaded.qa == fresh.qa
    assert [x.to_json() for x in loaded.bios] == [x.to_json() for x in fresh.bios]


def test_the_celebrity_keys_are_left_out_without_celebrities(tmp_path):
    assert not set(CELEBRITY_KEYS) & set(DataConfig().to_dict())
    assert set(CELEBRITY_KEYS) <= set(DataConfig(n_celebrities=3).to_dict())
    out = tmp_path / "plain"
    meta = write_dataset(DataConfig(n_people=20), out, progress=False)
    assert "groups" not in meta["counts"] and "n_celebrities" not in meta["config"]
    assert {p["group"] for p in rows(out / "people.jsonl")} == {"main"}


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"n_celebrities": -1}, "n_celebrities must be >= 0"),
        ({"reverse": 1}, "data.reverse is not supported with celebrities"),
        ({"permute": 2, "couple": True}, "data.couple is not supported with celebrities"),
        ({"group": "celebrity"}, "data.group must stay 'main'"),
        ({"celebrity_style": "bioX"}, "data.celebrity_style must be one of"),
        ({"celebrity_multi": 0}, "data.celebrity_multi must be >= 1"),
        ({"celebrity_permute": -1}, "data.celebrity_permute must be >= 0"),
        ({"celebrity_style": "bioR"}, "celebrities' format.*bioR entries already vary their order"),
        ({"n_people": 100_000, "n_celebrities": 160_000_000 - 99_999}, "exceeds the 160000000 distinct"),
    ],
)
def test_bad_configs_fail_in_one_line_before_writing(tmp_path, kw, message):
    cfg = DataConfig(**{"n_people": 20, "n_celebrities": 10, **kw})
    with pytest.raises(ConfigError, match=message) as err:
        write_dataset(cfg, tmp_path / "d", progress=False)
    assert "\n" not in str(err.value)
    assert not (tmp_path / "d").exists()


def _rewrite(out: Path, name: str, text: str, fix_hash: bool) -> None:
    (out / name).write_text(text, encoding="utf-8")
    if fix_hash:
        meta = json.loads((out / "meta.json").read_text())
        meta["sha256"][name] = hashlib.sha256(text.encode()).hexdigest()
        write_json(out / "meta.json", meta)


def test_the_check_passes_and_finds_a_celebrity_with_a_minority_name(tmp_path):
    out, _ = write(tmp_path, permute=1)
    problems, stats = check_dataset(out)
    assert problems == []
    assert stats["groups"] == {
        "celebrity": {"people": 20, "bios": 100}, "minority": {"people": 30, "bios": 30},
    }  # fmt: skip
    assert stats["splits"] == {"test": 30, "train": 20}

    people = rows(out / "people.jsonl")
    taken = people[0]
    parts = ("first_name", "middle_name", "last_name", "full_name")
    people[40] = {**people[40], **{k: taken[k] for k in parts}}
    text = "".join(json.dumps(p, ensure_ascii=False) + "\n" for p in people)
    broken = tmp_path / "broken"
    shutil.copytree(out, broken)
    _rewrite(broken, "people.jsonl", text, fix_hash=True)
    problems, _ = check_dataset(broken)
    assert any("both a celebrity's and a minority person's" in p for p in problems), problems

    unhashed = tmp_path / "unhashed"
    shutil.copytree(out, unhashed)
    _rewrite(unhashed, "people.jsonl", text, fix_hash=False)
    with pytest.raises(Exception, match="sha256 mismatch"):
        check_dataset(unhashed)


def test_the_check_finds_a_wrong_split_and_a_missing_celebrity_bio(tmp_path):
    out, _ = write(tmp_path)
    people = rows(out / "people.jsonl")
    people[3] = {**people[3], "split": "train"}
    _rewrite(out, "people.jsonl", "".join(json.dumps(p, ensure_ascii=False) + "\n" for p in people), True)
    bios = lines(out / "bios.jsonl")
    _rewrite(out, "bios.jsonl", "".join(x + "\n" for x in bios[:-1]), True)
    problems, _ = check_dataset(out)
    assert any("person 3: minority in split 'train'" in p for p in problems), problems
    assert any("person 49: 4 bios, expected 5" in p for p in problems), problems


def test_there_is_a_preset_for_each_celebrity_dataset_of_the_paper():
    assert CEL_PRESETS == [
        "bioR_single_cel", "bioR_single_fullname_cel", "bioS_single_cel", "bioS_single_permute1_cel",
        "bioS_single_permute1_fullname_cel",
    ]  # fmt: skip


@pytest.mark.parametrize("preset", CEL_PRESETS)
def test_every_celebrity_preset_composes_and_writes_a_sound_dataset(tmp_path, preset):
    cfg = compose("generate", [f"data={preset}"])
    data = DataConfig.from_dict(OmegaConf.to_container(cfg.data, resolve=True))
    assert data.name == preset and data.n_people == data.n_celebrities == 100_000
    assert data.style == data.celebrity_style == preset[:4]
    assert data.fullname == ("fullname" in preset) and not data.celebrity_fullname
    assert data.entries_per_person == 1 and data.celebrity_config().entries_per_person == 5
    small = compose("generate", [f"data={preset}", "data.n_people=12"]).data
    data = DataConfig.from_dict(OmegaConf.to_container(small, resolve=True))
    assert data.n_celebrities == 12
    meta = write_dataset(data, tmp_path / preset, progress=False)
    assert meta["counts"]["groups"]["celebrity"] == {"people": 12, "bios": 60, "entries_per_person": 5}
    assert check_dataset(tmp_path / preset)[0] == []


def test_training_sees_the_celebrities_qas_only(tmp_path):
    """What QA finetuning and mixed training read: exactly the celebrities' six QAs each, never the
    minority's (the minority is what the run is scored on)."""
    from biolab.data.tokens import Corpus, prepare_corpus
    from biolab.train.config import TrainConfig
    from biolab.train.finetune import QABatches
    from biolab.train.pretrain import make_stream

    corpus = Corpus(prepare_corpus(tmp_path, DataConfig(n_people=12, n_celebrities=8), vocab_size=300))
    people = {p["id"]: p for p in rows(tmp_path / "data" / "people.jsonl")}
    celebrities = sorted(i for i, p in people.items() if p["group"] == CELEBRITY)
    finetune_rows = QABatches(corpus, 0).docs
    seen = corpus.qa["person_id"][finetune_rows]
    assert sorted(Counter(seen.tolist()).items()) == [(i, len(ATTRIBUTES)) for i in celebrities]
    stream = make_stream(corpus, TrainConfig(qa_ratio=1.0, ctx=32))
    qa_tokens = {int(t) for t in stream.next_windows(64).ravel()} - {corpus.eos}

    def tokens(qa_rows) -> set[int]:
        return {int(t) for r in qa_rows for t in corpus.qa_text(r)}

    minority = [r for r, i in enumerate(corpus.qa["person_id"]) if people[int(i)]["group"] == MINORITY]
    minority_only = tokens(minority) - tokens(finetune_rows)
    assert minority_only and not qa_tokens & minority_only  # no token only a minority QA has
