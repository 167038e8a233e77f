import gc
import json
import re
from pathlib import Path

import pytest
from conftest import run_in_fork

from biolab.data import dataset as dataset_mod
from biolab.data.dataset import (
    DataConfig,
    generate,
    load_dataset,
    read_meta,
    verify_dataset,
    write_dataset,
)
from biolab.errors import ConfigError, DataFileError


def write(tmp_path, name="d", **kw):
    cfg = DataConfig(**{"n_people": 50, **kw})
    out = tmp_path / name
    meta = write_dataset(cfg, out, progress=False)
    return out, meta


def test_dataset_folder_contents(tmp_path):
    out, meta = write(tmp_path, multi=2, permute=1)
    assert sorted(p.name for p in out.iterdir()) == [
        "bios.jsonl", "meta.json", "people.jsonl", "qa.jsonl",
    ]  # fmt: skip
    assert meta == read_meta(out) == verify_dataset(out)
    assert meta["counts"] == {
        "people": 50, "train": 25, "test": 25, "bios": 100, "entries_per_person": 2, "qa": 300,
    }  # fmt: skip
    person = json.loads((out / "people.jsonl").read_text().splitlines()[0])
    assert list(person) == [
        "id", "first_name", "middle_name", "last_name", "full_name", "pronoun", "birth_date",
        "birth_city", "university", "major", "company", "company_city", "split", "group",
    ]  # fmt: skip
    bio = json.loads((out / "bios.jsonl").read_text().splitlines()[0])
    assert list(bio) == ["person_id", "entry", "text", "spans"]
    assert list(bio["spans"]) == [
        "birth_date", "birth_city", "university", "major", "company", "company_city", "name",
    ]  # fmt: skip
    qa = json.loads((out / "qa.jsonl").read_text().splitlines()[0])
    assert list(qa) == ["person_id", "attribute", "question", "answer", "split"]
    bits = meta["bits_per_person"]
    assert bits["per_attribute"]["birth_date"] == pytest.approx(16.04, abs=0.01)
    assert bits["name"] == pytest.approx(21.61, abs=0.01)  # log2(1.6e8 / 50)
    assert meta["bio_length"]["words"]["mean"] > 30


def test_load_roundtrip_equals_in_memory_generation(tmp_path):
    out, _ = write(tmp_path, style="bioR", multi=2)
    loaded = load_dataset(out, verify=True)
    fresh = generate(loaded.config)
    assert loaded.people == fresh.people
    assert [b.to_json() for b in loaded.bios] == [b.to_json() for b in fresh.bios]
    assert loaded.qa == fresh.qa


def test_same_seed_same_bytes_any_workers_other_seed_differs(tmp_path, monkeypatch):
    monkeypatch.setattr(dataset_mod, "CHUNK", 16)  # several chunks even for a small population
    cfg = DataConfig(n_people=100, multi=2, permute=1, fullname=True)
    a = write_dataset(cfg, tmp_path / "a", progress=False, workers=1)
    b = write_dataset(cfg, tmp_path / "b", progress=False, workers=2)
    assert a["sha256"] == b["sha256"]
    for f in ("people.jsonl", "bios.jsonl", "qa.jsonl", "meta.json"):
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes()
    c = write_dataset(
        DataConfig(n_people=100, multi=2, permute=1, fullname=True, seed=1), tmp_path / "c", progress=False
    )
    assert all(c["sha256"][f] != a["sha256"][f] for f in a["sha256"])


def test_existing_output_is_never_silently_overwritten(tmp_path):
    out, meta = write(tmp_path)
    before = (out / "bios.jsonl").read_bytes()
    with pytest.raises(ConfigError, match="not empty; pass overwrite=true"):
        write_dataset(DataConfig(n_people=50, seed=5), out, progress=False)
    assert (out / "bios.jsonl").read_bytes() == before
    meta2 = write_dataset(DataConfig(n_people=50, seed=5), out, overwrite=True, progress=False)
    assert meta2["sha256"] != meta["sha256"] and read_meta(out) == meta2


@pytest.mark.parametrize(
    ("entries", "found"),
    [
        ({"thesis.tex": "mine"}, "no meta.json; it holds 'thesis.tex'"),
        ({"config.json": "{}", "status.json": "{}", "model/config.json": "{}"}, "'config.json', 'model'"),
        ({"runs/demo/a.json": "{}", "data/x/meta.json": "{}"}, "it holds 'data', 'runs'"),
        ({"meta.json": "{}", "people.jsonl": ""}, "it holds 'meta.json', 'people.jsonl'"),  # not a meta
        ({"meta.json": None, "notes.txt": "mine"}, "it holds 'notes.txt'"),  # a dataset, plus a note
    ],
)
def test_overwrite_replaces_a_dataset_folder_only(tmp_path, entries, found):
    """Issue 27: generate's overwrite=true replaced a pipeline root, a run or a thesis folder."""
    out = tmp_path / "out"
    for name, text in entries.items():
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        if text is None:  # a real dataset's meta.json
            write_dataset(DataConfig(n_people=4), tmp_path / "real", progress=False)
            text = (tmp_path / "real" / "meta.json").read_text()
        (out / name).write_text(text)
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    with pytest.raises(ConfigError, match=f"is not a dataset folder \\(.*{re.escape(found)}"):
        write_dataset(DataConfig(n_people=4), out, overwrite=True, progress=False)
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before


def test_a_killed_generation_leaves_nothing_that_looks_complete(tmp_path, monkeypatch):
    def boom(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(dataset_mod, "_chunk_job", boom)
    with pytest.raises(KeyboardInterrupt):
        write_dataset(DataConfig(n_people=50), tmp_path / "d", progress=False)
    assert list(tmp_path.iterdir()) == []


def test_tampering_is_detected(tmp_path):
    out, _ = write(tmp_path)
    with open(out / "bios.jsonl", "a") as f:
        f.write("{}\n")
    with pytest.raises(DataFileError, match="sha256 mismatch"):
        verify_dataset(out)
    with pytest.raises(DataFileError, match="not a biolab dataset"):
        read_meta(tmp_path)


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"n_people": 1}, "n_people must be >= 2"),
        ({"n_people": 160_000_001}, "exceeds the 160000000 distinct full names"),
        ({"multi": 0}, "multi must be >= 1"),
        ({"permute": -1}, "permute must be >= 0"),
        ({"couple": True}, "needs data.permute >= 1"),
        ({"style": "bioR", "permute": 2}, "bioR entries already vary their order"),
        ({"style": "bioX"}, "style must be one of"),
        ({"merge_prob": 1.5}, r"merge_prob must be in \[0, 1\]"),
        ({"reverse": 7}, r"reverse must be 0 \(off\), 1-5"),
        ({"reverse": -1}, r"reverse must be 0 \(off\), 1-5"),
        ({"style": "bioR", "reverse": 1}, "reverse is a bioS augmentation"),
        ({"reverse": 6, "fullname": True}, "use fullname=false"),
        ({"max_values": 1}, "max_values must be 0"),
    ],
)
def test_bad_config_fails_before_any_work(tmp_path, kw, message):
    with pytest.raises(ConfigError, match=message):
        write_dataset(DataConfig(**{"n_people": 10, **kw}), tmp_path / "d", progress=False)
    assert list(tmp_path.iterdir()) == []


def test_from_dict_names_valid_keys_and_types():
    with pytest.raises(ConfigError, match=r"unknown data key\(s\) \['mutli'\]; valid keys: name"):
        DataConfig.from_dict({"mutli": 2})
    with pytest.raises(ConfigError, match="data.multi must be int"):
        DataConfig.from_dict({"multi": "five"})
    with pytest.raises(ConfigError, match="data.fullname must be bool"):
        DataConfig.from_dict({"fullname": 1})
    assert DataConfig.from_dict({"multi": 5, "merge_prob": 1}).entries_per_person == 5


# Generation is a pure function of (config, seed, package data). These hashes pin it across
# machines and library versions; if a deliberate change (templates, sampler) moves them, bump
# FORMAT_VERSION or say so in the change, then update them.
GOLDEN = {
    "people.jsonl": "299b5b787a7924ca99a1119eca5b615e6438006093906c9e68a10c8cf127862a",
    "qa.jsonl": "587b682a09357699d19ca8d5c5e5f9b9f675fda56f7e71f96fbec39c8fb050a3",
    "bioS": "a628d86300facab4c416d3334993c87be5dd15a01fa0352639a65f9364f26254",
    "bioR": "f560335b6fe1ca02850861aca6fa3da0f272b16d3ce786b6ba284b8b91ed7b7f",
}


@pytest.mark.parametrize(
    ("style", "kw"), [("bioS", {"multi": 2, "permute": 1, "fullname": True}), ("bioR", {"multi": 2})]
)
def test_generation_is_pinned_across_machines(tmp_path, style, kw):
    meta = write_dataset(DataConfig(n_people=30, seed=11, style=style, **kw), tmp_path / "d", progress=False)
    assert meta["sha256"]["people.jsonl"] == GOLDEN["people.jsonl"]
    assert meta["sha256"]["qa.jsonl"] == GOLDEN["qa.jsonl"]
    assert meta["sha256"]["bios.jsonl"] == GOLDEN[style]


def test_reverse_is_left_out_of_the_config_at_its_default(tmp_path):
    assert "reverse" not in DataConfig().to_dict()  # earlier datasets' meta.json stay byte-identical
    assert DataConfig(reverse=6).to_dict()["reverse"] == 6
    out, meta = write(tmp_path, multi=2, reverse=6)
    assert meta["config"]["reverse"] == 6
    assert load_dataset(out).config == DataConfig(n_people=50, multi=2, reverse=6)
    plain, _ = write(tmp_path, "plain", multi=2)
    # the same people and QA; the bios have the plain twin's templates, with the name moved
    for f in ("people.jsonl", "qa.jsonl"):
        assert (out / f).read_bytes() == (plain / f).read_bytes()
    a, b = load_dataset(out).bios, load_dataset(plain).bios
    assert all(
        x.text.endswith(f"name is {y.text[slice(*y.spans['name'][0])]}.") for x, y in zip(a, b, strict=True)
    )


def test_max_values_shrinks_the_attribute_pools_and_is_left_out_at_its_default(tmp_path):
    assert "max_values" not in DataConfig().to_dict()
    out, meta = write(tmp_path, max_values=4, multi=2)
    assert meta["config"]["max_values"] == 4
    people = load_dataset(out).people
    for attribute in ("birth_city", "university", "major", "company", "company_city"):
        assert 2 <= len({getattr(p, attribute) for p in people}) <= 4, attribute
    assert meta["bits_per_person"]["per_attribute"]["university"] == 2.0  # log2 of the pool drawn from
    assert len({p.full_name for p in people}) == 50


def test_timings_name_every_part_and_collection_is_back_on(tmp_path):
    parts = {}
    write_dataset(DataConfig(n_people=20), tmp_path / "d", progress=False, timings=parts)
    assert set(parts) == {
        "sample_people", "people.jsonl", "qa.jsonl", "bios.jsonl", "meta.json", "encode_sha256_write",
    }  # fmt: skip
    assert all(v >= 0 for v in parts.values()) and gc.isenabled()


@pytest.mark.slow
def test_the_benchmarks_plain_python_yardstick_writes_the_same_bios(tmp_path):
    write_dataset(DataConfig(n_people=300, multi=5, permute=1, fullname=True), tmp_path / "d", progress=False)
    script = Path(__file__).resolve().parent.parent / "scripts" / "bench_reference_generate.py"
    args = ["--n-people=300", f"--out={tmp_path / 'ref.jsonl'}", f"--check={tmp_path / 'd'}"]
    r = run_in_fork([script, *args], timeout=120)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["same_bytes_as_biolab"] is True
