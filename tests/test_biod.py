"""bioD (Part 3.3 Definition 2.2): values made of chunks from each attribute's own vocabulary, spans
that point at them, fresh sentence orders per entry, the same bytes for the same seed."""

import json
import math

import pytest

from biolab.data.biod import BioDConfig, biod_bits, chunk_vocabularies, symbol, symbol_width
from biolab.data.dataset import DataConfig, iter_jsonl, read_meta, write_dataset
from biolab.errors import ConfigError

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
