"""bioS(N) rendered on the fly (biolab.data.fresh, ``train.fresh_bios``): every exposure a new
rendering, the windows a function of the seed alone, resumable, counted by exposure_plan."""

import json
import math
from dataclasses import replace

import numpy as np
import pytest
from test_resume import killed_run, same, weights

from biolab.cli import compose
from biolab.data.bios import render_bios_bioS
from biolab.data.dataset import DataConfig, write_dataset
from biolab.data.fresh import (
    FreshBios,
    FreshBioStream,
    PersonStreams,
    check_fresh_format,
    fresh_bio_stream,
    fresh_bios,
    person_rng,
)
from biolab.data.packing import WindowStream
from biolab.data.people import ATTRIBUTES
from biolab.data.tokens import Corpus, prepare_corpus, tokenize_dataset, tokenize_texts
from biolab.errors import ConfigError
from biolab.model import ModelConfig
from biolab.pipeline.plan import train_keys
from biolab.train.config import TrainConfig
from biolab.train.pretrain import exposure_plan, make_stream, pretrain

MODEL = ModelConfig(name="test", n_layer=1, n_head=2, d_model=32, max_positions=64)
CTX = 32


def train_cfg(**kw) -> TrainConfig:
    base = dict(steps=6, batch_size=4, ctx=CTX, warmup_steps=1, log_every=1, eval_every=0, ckpt_every=2,
                wandb="disabled", fresh_bios=True)  # fmt: skip
    return TrainConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Corpus:
    """Two stored entries per person: fresh training reads neither but entry 0's length."""
    root = tmp_path_factory.mktemp("fresh")
    return Corpus(prepare_corpus(root, DataConfig(n_people=40, multi=2, permute=1), vocab_size=2048))


def stream(corpus: Corpus, seed: int = 0, chunk: int = 16) -> FreshBioStream:
    return fresh_bio_stream(corpus, CTX, seed, chunk=chunk)


def documents(windows: np.ndarray, eos: int) -> list[np.ndarray]:
    """The whole documents of consecutive windows: those between two EOS."""
    flat = windows.reshape(-1)
    cuts = np.flatnonzero(flat == eos)
    return [flat[a + 1 : b] for a, b in zip(cuts[:-1], cuts[1:], strict=True)]


def test_same_seed_same_windows_whatever_the_calls_and_chunks(corpus):
    first = stream(corpus).next_windows(120)  # 40 people of ~72 tokens: 90 windows a pass
    other_calls = stream(corpus)
    by_parts = np.concatenate([other_calls.next_windows(n) for n in (1, 7, 50, 3, 59)])
    assert np.array_equal(by_parts, first)
    assert np.array_equal(stream(corpus, chunk=5).next_windows(120), first)  # chunking is no part of them
    assert not np.array_equal(stream(corpus, seed=1).next_windows(120), first)


def test_a_stream_loaded_mid_way_continues_with_the_same_windows(corpus):
    a = stream(corpus)
    a.next_windows(45)
    state = a.state_dict()
    assert json.loads(json.dumps(state)) == state  # a checkpoint holds it as is
    rest = a.next_windows(80)  # into the next passes
    b = stream(corpus, chunk=7)
    b.next_windows(3)
    b.load_state_dict(state)
    assert np.array_equal(b.next_windows(80), rest)
    with pytest.raises(ValueError, match="not the state of a fresh bio stream"):
        b.load_state_dict({"epoch": 0, "pos": 0})  # a WindowStream's


def test_every_pass_renders_each_person_anew_with_the_same_values(corpus):
    bios = fresh_bios(corpus, seed=0)
    rows = np.arange(len(bios.people))
    first, second = bios.render(0, rows), bios.render(1, rows)
    for person, a, b in zip(bios.people, first, second, strict=True):
        assert a.text != b.text  # other templates or another order
        for bio in (a, b):
            assert bio.person_id == person.id
            assert all(bio.text[slice(*bio.spans[k])] == getattr(person, k) for k in ATTRIBUTES)
    orders = [[sorted(ATTRIBUTES, key=lambda k: a.spans[k][0]) for a in bs[:20]] for bs in (first, second)]
    assert orders[0] != orders[1]  # permute=1: sentence orders are drawn too
    assert not np.array_equal(bios.order(0), bios.order(1))  # and each pass has its own order


def test_a_bio_depends_on_its_person_and_pass_alone(corpus):
    bios = fresh_bios(corpus, seed=3)
    chunk = bios.render(2, np.array([5, 0, 17]))
    cfg = bios.cfg
    for i, bio in zip((5, 0, 17), chunk, strict=True):
        p = bios.people[i]
        alone = render_bios_bioS([p], bios.templates, person_rng(3, p.id, 2), 1, cfg.permute, cfg.fullname)
        assert alone[0].text == bio.text
    with pytest.raises(ValueError, match="not one row per person"):
        PersonStreams([person_rng(0, 0, 0)]).random(6)


def test_windows_hold_the_datasets_people_tokenized_as_the_corpus_is(corpus):
    tok = corpus.tokenizer()
    bios = fresh_bios(corpus, seed=0)
    by_name = {p.full_name: p for p in bios.people}
    windows = stream(corpus).next_windows(60)
    docs = documents(windows, corpus.eos)
    assert len(docs) > 20
    for doc in docs:
        text = tok.decode(doc.tolist())
        name = next(n for n in by_name if text.startswith(n))
        assert all(getattr(by_name[name], k) in text for k in ATTRIBUTES)
        ids, _, _ = tokenize_texts(tok, [text], fast=False)
        assert np.array_equal(ids, doc)
    # pass 0 in order: every person once, none twice
    pass_0 = bios.order(0)
    names = [
        next(n for n in by_name if tok.decode(d.tolist()).startswith(n)) for d in docs[: len(pass_0) - 1]
    ]
    assert names == [bios.people[i].full_name for i in pass_0[1 : len(names) + 1]]


def test_fresh_bios_follow_the_domain_token_of_the_corpus(corpus, tmp_path):
    tokenize_dataset(corpus.meta["data_dir"], tmp_path / "c", vocab_size=2048, domain_token=True)
    domain = Corpus(tmp_path / "c")
    docs = documents(stream(domain).next_windows(20), domain.eos)
    assert docs and all(
        d[0] == domain.domain_token_id and (d == domain.domain_token_id).sum() == 1 for d in docs
    )


def test_bioR_renders_fresh_too(tmp_path):
    c = Corpus(prepare_corpus(tmp_path, DataConfig(style="bioR", n_people=12), vocab_size=400))
    bios = fresh_bios(c, seed=0)
    a, b = bios.render(0, np.arange(12)), bios.render(1, np.arange(12))
    assert sum(x.text != y.text for x, y in zip(a, b, strict=True)) >= 10
    assert fresh_bio_stream(c, CTX, 0).next_windows(30).shape == (30, CTX)


def test_exposures_count_one_fresh_bio_per_person(corpus):
    cfg = train_cfg(exposures=20, ckpt_every=0)
    plan = exposure_plan(corpus, cfg)
    people = 40
    bios, tok = fresh_bios(corpus, seed=0), corpus.tokenizer()
    texts = [b.text for e in range(52) for b in bios.render(e, bios.order(e))]  # 2080 bios: 2048 and more
    per_bio = np.diff(tokenize_texts(tok, texts, fast=False)[1]).mean() + 1  # each with its EOS
    assert plan["tokens_per_exposure"] == pytest.approx(per_bio, abs=0.1)
    assert plan["steps"] == math.ceil(20 * people * plan["tokens_per_exposure"] / (cfg.batch_size * CTX))
    assert plan["fresh_bios"] and plan["entries_per_person"] == 1
    assert plan["passes"] == pytest.approx(plan["exposures"], abs=0.01)  # one bio a person a pass
    stored = exposure_plan(corpus, replace(cfg, fresh_bios=False))
    assert stored["passes"] == pytest.approx(stored["exposures"] / 2, abs=2e-3) and "fresh_bios" not in stored
    # the steps' windows end in the 20th pass (or the next, by a pass's dropped tail and rounding)
    s = make_stream(corpus, cfg)
    s.next_windows(plan["steps"] * cfg.batch_size)
    assert s.bio.state_dict()["epoch"] in (19, 20)


def test_a_tiny_pretraining_on_fresh_bios_runs_and_resumes_to_the_same_weights(corpus, tmp_path):
    pretrain(tmp_path / "a", corpus, MODEL, train_cfg(), progress=False)
    killed_run(corpus, tmp_path / "b", train_cfg(), MODEL)
    pretrain(tmp_path / "b", corpus, MODEL, train_cfg(), progress=False)  # from the step-4 checkpoint
    assert same(weights(tmp_path / "a"), weights(tmp_path / "b"))
    assert json.loads((tmp_path / "a" / "config.json").read_text())["train"]["fresh_bios"] is True
    mixed = pretrain(
        tmp_path / "m", corpus, MODEL, train_cfg(steps=2, qa_ratio=0.5, ckpt_every=0), progress=False
    )
    assert mixed["step"] == 2


def test_fresh_bios_is_the_bio_side_of_mixed_training(corpus):
    s = make_stream(corpus, train_cfg(qa_ratio=0.5))
    assert isinstance(s.bio, FreshBioStream) and isinstance(s.qa, WindowStream)
    assert isinstance(make_stream(corpus, train_cfg(fresh_bios=False)).bio, WindowStream)
    s.next_windows(30)
    assert s.state_dict()["bio"]["epoch"] == 0 and s.state_dict()["bio"]["bio"] > 0


def test_formats_without_templates_and_bad_keys_are_refused(corpus, tmp_path):
    for style in ("bioD", "bioR_llm"):
        with pytest.raises(ConfigError, match=f"data.style={style} has none"):
            check_fresh_format(DataConfig(style=style))
    with pytest.raises(ConfigError, match="needs data.n_celebrities=0"):
        check_fresh_format(DataConfig(n_celebrities=4))
    biod = DataConfig(name="d", style="bioD", n_people=10, biod={"K": 2, "C": 1, "D": 10, "L": 2, "T": 10})
    write_dataset(biod, tmp_path / "data", progress=False)
    tokenize_dataset(tmp_path / "data", tmp_path / "corpus", vocab_size=300)
    with pytest.raises(ConfigError, match="train.fresh_bios renders bios from templates"):
        pretrain(tmp_path / "run", Corpus(tmp_path / "corpus"), MODEL, train_cfg(), progress=False)
    assert not (tmp_path / "run").exists()
    with pytest.raises(ConfigError, match="finetune.train.fresh_bios is for pretraining"):
        TrainConfig.from_dict({"fresh_bios": True}, "finetune.train")
    with pytest.raises(ConfigError, match="train.fresh_bios must be bool"):
        TrainConfig.from_dict({"fresh_bios": "yes"})
    with pytest.raises(ValueError, match="no people"):
        FreshBios(DataConfig(), [], None, 0, None)
    with pytest.raises(ValueError, match="fewer than one window"):  # 40 bios of ~76 tokens
        FreshBioStream(fresh_bios(corpus, 0), corpus.eos, ctx=5000).next_windows(1)


def test_stage_keys_hold_fresh_bios_only_when_set_and_the_preset_keeps_one_entry():
    assert "fresh_bios" not in train_keys({"steps": 5, "fresh_bios": False})
    assert train_keys({"steps": 5, "fresh_bios": True})["fresh_bios"] is True
    cfg = compose("pretrain", ["data=bioS_fresh", "train.fresh_bios=true", "out=x"])
    assert (cfg.data.multi, cfg.data.permute, cfg.train.fresh_bios) == (1, 1, True)
