"""bioD (Part 3.3 Definition 2.2): values made of chunks from each attribute's own vocabulary, spans
that point at them, fresh sentence orders per entry, the same bytes for the same seed."""

import hashlib
import json
import math

import pytest

from biolab.data.biod import BioDConfig, biod_bits, chunk_vocabularies, symbol, symbol_width
from biolab.data.check import check_dataset
from biolab.data.dataset import DataConfig, iter_jsonl, load_dataset, read_meta, write_dataset
from biolab.errors import ConfigError, DataFileError

BIOD = {"K": 3, "C": 2, "D": 5, "L": 2, "T": 4}


def make(tmp_path, name="a", **kw):
    cfg = DataConfig(name="d", style="bioD", n_people=20, multi=4, biod={**BIOD, **kw})
    write_dataset(cfg, tmp_path / name, progress=False)
    return tmp_path / name


def test_values_are_c_chunks_of_their_attribute_s_d_chunk_vocabulary(tmp_path):
    out = make(tmp_path)
    people = list(iter_jsonl(out / "people.jsonl"))
    attrs = read_meta(out)["attributes"]
    assert attrs == ["ID 1", "ID 2", "ID 3"]
    for a in attrs:
        chunks = {c for p in people for c in p[a].split(", ")}
        assert len(chunks) <= BIOD["D"] and all(len(c.split(" ")) == BIOD["L"] for c in chunks)
        assert all(len(p[a].split(", ")) == BIOD["C"] for p in people)
    by_id = {p["id"]: p for p in people}
    orders = set()
    for bio in iter_jsonl(out / "bios.jsonl"):
        p = by_id[bio["person_id"]]
        assert bio["text"].startswith(p["full_name"] + "'s ")
        for a in attrs:
            s, e = bio["spans"][a]
            assert bio["text"][s:e] == p[a]
        orders.add(tuple(sorted(attrs, key=lambda a: bio["spans"][a][0])))
    assert len(orders) > 1  # each entry its own sentence order


def test_the_same_seed_gives_the_same_bytes(tmp_path):
    a, b = make(tmp_path, "a"), make(tmp_path, "b")
    assert read_meta(a)["sha256"] == read_meta(b)["sha256"]
    assert (a / "bios.jsonl").read_bytes() == (b / "bios.jsonl").read_bytes()


def test_chunk_vocabularies_are_distinct_and_symbols_are_letters():
    vocab = chunk_vocabularies(BioDConfig(**BIOD), seed=0)
    assert vocab.shape == (3, 5, 2) and all(len({tuple(c) for c in v}) == 5 for v in vocab)
    w = symbol_width(512)
    assert w == 2 and symbol(0, w) == "aa" and symbol(27, w) == "bb" and symbol(511, w).isalpha()


def test_bits_count_names_values_and_the_vocabularies():
    b = biod_bits(BioDConfig(**BIOD), 20, 10_000)
    assert b["name"] == pytest.approx(math.log2((10_000 - 20) / 20), abs=1e-4)
    assert b["attributes"] == pytest.approx(3 * 2 * math.log2(5), abs=1e-4)
    assert b["diversity_total"] == pytest.approx(3 * 5 * math.log2((16 - 5) / 5), abs=1e-4)


@pytest.mark.parametrize(
    "bad, match", [({"D": 17}, "do not fit"), ({"K": 0}, "biod.K"), ({"Z": 1}, "unknown")]
)
def test_bad_biod_settings_fail_before_work(tmp_path, bad, match):
    with pytest.raises(ConfigError, match=match):
        DataConfig(name="d", style="bioD", biod={**BIOD, **bad}).validate()
    assert not (tmp_path / "x").exists()


def test_biod_refuses_the_template_augmentations():
    with pytest.raises(ConfigError, match="permute is not a bioD option"):
        DataConfig(name="d", style="bioD", permute=1, biod=BIOD).validate()
    with pytest.raises(ConfigError, match="data.biod is for data.style=bioD"):
        DataConfig(name="d", biod=BIOD).validate()


def test_a_biod_config_is_kept_in_meta_and_a_biographical_one_is_not(tmp_path):
    out = make(tmp_path)
    assert read_meta(out)["config"]["biod"] == BIOD
    assert "biod" not in DataConfig().to_dict()
    assert json.loads(json.dumps(DataConfig().to_dict())) == DataConfig().to_dict()


def test_bios_cap_renders_every_exposure_afresh(tmp_path):
    # Part 3.3's bioS(N): each exposure a new template draw and sentence order, pre-rendered
    from omegaconf import OmegaConf

    from biolab.cli import compose

    keys = OmegaConf.to_container(compose("run", ["data=bioS_cap", "data.n_people=4"]).data, resolve=True)
    write_dataset(DataConfig.from_dict(keys), tmp_path / "s", progress=False)
    texts: dict[int, list[str]] = {}
    for bio in iter_jsonl(tmp_path / "s" / "bios.jsonl"):
        texts.setdefault(bio["person_id"], []).append(bio["text"])
    assert all(len(t) == 100 and len(set(t)) == 100 for t in texts.values())


def _rehash(out, name: str, rows: list[dict]) -> None:
    """Rewrite a file of the folder and its sha256 in meta.json, so the check reads the damage."""
    text = "".join(json.dumps(r) + "\n" for r in rows)
    (out / name).write_text(text, encoding="utf-8")
    meta = json.loads((out / "meta.json").read_text())
    meta["sha256"][name] = hashlib.sha256(text.encode()).hexdigest()
    (out / "meta.json").write_text(json.dumps(meta))


@pytest.mark.parametrize("kw", [{}, {"L": 1, "C": 3, "D": 8, "T": 30}])
def test_the_independent_check_reads_a_bioD_folder_and_finds_its_damage(tmp_path, kw):
    out = make(tmp_path, **kw)
    b = {**BIOD, **kw}
    problems, stats = check_dataset(out)
    assert problems == [] and stats["people"] == 20 and stats["bios"] == 80
    assert set(stats["chunks_in_use"]) == {"ID 1", "ID 2", "ID 3"}
    assert all(0 < n <= b["D"] for n in stats["chunks_in_use"].values())

    people = list(iter_jsonl(out / "people.jsonl"))
    width = symbol_width(b["T"])
    people[2]["ID 1"] = people[2]["ID 1"].replace(people[2]["ID 1"][:width], "z" * width, 1)  # z >= T
    _rehash(out, "people.jsonl", people)
    bios = list(iter_jsonl(out / "bios.jsonl"))
    for bio in bios[5:7]:  # the last sentence dropped, its span kept
        bio["text"] = bio["text"][: bio["text"].rindex(" Their")]
    gone = max(bios[6]["spans"], key=lambda a: bios[6]["spans"][a][0] if a != "name" else -1)
    bios[6]["spans"][gone] = [0, 4]  # ... and here pointing at a piece of the name
    _rehash(out, "bios.jsonl", bios)
    problems, _ = check_dataset(out)
    assert any(p.startswith("person 2: ID 1") and "is not one of T=" in p for p in problems), problems
    assert any("bio 1/1: an attribute span lies outside the text" in p for p in problems), problems
    assert any(p.startswith(f"bio 1/2: span {gone} is ") for p in problems), problems
    assert any("bio 1/2: 2 sentences, not K=3" in p for p in problems), problems


def test_load_dataset_refuses_a_bioD_folder_in_one_line(tmp_path):
    out = make(tmp_path)
    with pytest.raises(DataFileError, match="a bioD dataset has no Person records; read its files"):
        load_dataset(out)
