"""The bits estimator (Part 3.3 Definition 4.3) on models whose answer is known, its formula against a
direct computation from the CSV columns, and int8 / int4 rounding."""

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import run_in_fork
from torch import nn
from transformers.modeling_outputs import CausalLMOutput

from biolab.data.dataset import DataConfig, write_dataset
from biolab.data.tokens import Corpus, tokenize_dataset
from biolab.errors import ConfigError
from biolab.eval.capacity import (
    CapacityConfig,
    bits,
    first_bios,
    knowledge,
    measure,
    measure_with_quantized,
    span_losses,
    used_parameters,
)
from biolab.eval.quantize import quantize_model_, quantize_weights
from biolab.model import ModelConfig, build_model


class Uniform(nn.Module):
    """Equal logits everywhere: every token costs ln V."""

    def __init__(self, vocab):
        super().__init__()
        self.vocab, self.w = vocab, nn.Parameter(torch.zeros(1))
        self.config = SimpleNamespace(vocab_size=vocab)

    def get_input_embeddings(self):
        return None

    get_output_embeddings = get_input_embeddings

    def forward(self, input_ids, attention_mask=None):
        return CausalLMOutput(logits=torch.zeros(*input_ids.shape, self.vocab))


class Oracle(Uniform):
    """Looks ahead: all mass on the token that comes next (no real model can, on the names)."""

    def forward(self, input_ids, attention_mask=None):
        logits = torch.full((*input_ids.shape, self.vocab), -1e4)
        nxt = torch.roll(input_ids, -1, dims=1)
        logits.scatter_(-1, nxt[..., None], 0.0)
        return CausalLMOutput(logits=logits)


@pytest.fixture(scope="module", params=["bioS", "bioD"])
def dataset(request, tmp_path_factory):
    tmp = tmp_path_factory.mktemp(request.param)
    if request.param == "bioS":
        cfg = DataConfig(name="s", n_people=12, multi=2, permute=1)
    else:
        cfg = DataConfig(
            name="d", style="bioD", n_people=12, multi=2, biod={"K": 3, "C": 2, "D": 8, "L": 2, "T": 6}
        )
    write_dataset(cfg, tmp / "data", progress=False)
    tokenize_dataset(tmp / "data", tmp / "corpus", vocab_size=300)
    return tmp / "data", Corpus(tmp / "corpus")


def test_a_uniform_model_pays_ln_v_per_token_and_learns_nothing(dataset):
    data, corpus = dataset
    tok = corpus.tokenizer()
    texts, spans, present, names = first_bios(data)
    losses = span_losses(Uniform(len(tok)), tok, texts, spans)
    ids = [tok(t[s:e])["input_ids"] for t, row in zip(texts, spans, strict=True) for s, e in row[:1]]
    # the name opens the bio: its tokens are those of the name alone
    assert np.allclose(losses[:, 0], [len(i) * math.log(len(tok)) for i in ids])
    row = measure(Uniform(len(tok)), tok, data, corpus.bio_ids)
    assert row["bits"] == 0.0 and row["N"] == 12 and row["people_read"] == 12


def test_an_oracle_scores_zero_loss_and_at_most_the_dataset_s_knowledge(dataset):
    data, corpus = dataset
    tok = corpus.tokenizer()
    row = measure(Oracle(len(tok)), tok, data, corpus.bio_ids)
    assert row["p1"] == pytest.approx(0, abs=1e-6) and row["p2"] == pytest.approx(0, abs=1e-6)
    # all the knowledge there is, and no more: bits == R_max * P
    assert row["bits"] == pytest.approx(row["R_max"] * row["P"], rel=1e-9)


def test_bits_follow_definition_4_3_from_the_csv_columns():
    k = {"style": "bioS", "N": 1000, "log2_N0": math.log2(400 * 400 * 1000), "log2_S0": 47.6}
    p1, p2, P = 12.0, 20.0, 50_000
    got = bits(k, p1, p2, P)
    direct = 1000 * math.log2(400 * 400 * 1000 / math.exp(p1)) + 1000 * math.log2(2**47.6 / math.exp(p2))
    assert got["bits"] == pytest.approx(direct) and got["R"] == pytest.approx(direct / P)
    assert got["R_max"] == pytest.approx((1000 * math.log2(400 * 400 * 1000 / 1000) + 1000 * 47.6) / P)
    assert bits(k, p1, 1e4, P)["value_bits"] == 0.0  # worse than uniform: nothing, not negative


def test_bioD_bits_hold_theorem_3_2_s_three_terms():
    k = {"style": "bioD", "N": 100, "log2_N0": math.log2(1e6), "log2_S0": 3 * 2 * math.log2(8),
         "K": 3, "C": 2, "D": 8, "L": 2, "T": 6}  # fmt: skip
    p1, p2 = 10.0, 4.0
    got = bits(k, p1, p2, 1000)
    assert got["name_bits"] == pytest.approx(100 * math.log2((1e6 - 100) / math.exp(p1)))
    assert got["value_bits"] == pytest.approx(100 * 3 * math.log2(8**2 / math.exp(p2 / 3)))
    assert got["diversity_bits"] == pytest.approx(3 * 8 * math.log2((36 - 8) / (8 * math.exp(p2 / 6))))


def test_p_counts_only_the_embedding_rows_the_data_uses():
    model = build_model(ModelConfig(n_layer=1, n_head=1, d_model=16), 300, 0, 1, 0)
    total = sum(p.numel() for p in model.parameters())
    assert used_parameters(model, np.arange(300)) == total
    assert used_parameters(model, np.array([0, 5, 5, 7])) == total - (300 - 3) * 16


def test_rounding_keeps_2_to_the_bits_levels_per_group_and_int8_barely_moves():
    w = torch.randn(4, 64)
    q4 = quantize_weights(w, 4, 32)
    for group in q4.reshape(4, 2, 32).reshape(8, 32):
        assert len(torch.unique(group)) <= 15  # -7..7 times one scale
    assert (quantize_weights(w, 8, 32) - w).abs().max() < w.abs().max() / 127
    assert (q4 - w).abs().max() > (quantize_weights(w, 8, 32) - w).abs().max()


def test_a_quantized_model_keeps_its_embeddings_and_the_float_one_is_untouched(dataset):
    data, corpus = dataset
    torch.manual_seed(0)
    model = build_model(
        ModelConfig(n_layer=1, n_head=1, d_model=16), corpus.vocab_size, corpus.eos, corpus.pad
    )
    before = {n: p.clone() for n, p in model.named_parameters()}
    rows = measure_with_quantized(
        model, corpus.tokenizer(), data, corpus.bio_ids, CapacityConfig(quantize=[8, 2])
    )
    assert [r["quant"] for r in rows] == ["fp32", "int8", "int2"]
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())
    q = build_model(ModelConfig(n_layer=1, n_head=1, d_model=16), corpus.vocab_size, corpus.eos, corpus.pad)
    emb = q.get_input_embeddings().weight.clone()
    assert quantize_model_(q, 4) > 0 and torch.equal(q.get_input_embeddings().weight, emb)


def test_knowledge_reads_the_dataset_s_spaces(dataset):
    data, _ = dataset
    from biolab.data.dataset import read_meta

    k = knowledge(read_meta(data))
    assert k["N"] == 12 and k["log2_N0"] == pytest.approx(math.log2(400 * 400 * 1000), abs=1e-3)


def test_capacity_config_refuses_bad_bit_widths():
    with pytest.raises(ConfigError, match="capacity.quantize"):
        CapacityConfig.from_dict({"quantize": [1]})


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """An untrained causal model saved as a pretraining saves it (recording dataset ``data``), a masked
    LM with the same record, and a second dataset with its own corpus."""
    from biolab.io import write_json
    from biolab.model import TRAINING_DATA
    from biolab.train.pretrain import corpus_training_data

    tmp = tmp_path_factory.mktemp("saved")
    for name, n in (("data", 12), ("other", 14)):
        write_dataset(DataConfig(name=name, n_people=n), tmp / name, progress=False)
        tokenize_dataset(tmp / name, tmp / f"{name}_corpus", vocab_size=300)
    corpus = Corpus(tmp / "data_corpus")
    for folder, arch in (("model", "gpt_neox"), ("mlm", "modernbert")):
        cfg = ModelConfig(name="t", arch=arch, n_layer=1, n_head=2, d_model=16, max_positions=256)
        build_model(cfg, corpus.vocab_size, corpus.eos, corpus.pad, corpus.eos).save_pretrained(tmp / folder)
        corpus.tokenizer().save_pretrained(tmp / folder)
        write_json(tmp / folder / TRAINING_DATA, corpus_training_data(corpus))
    return tmp


def test_capacity_script_refuses_what_the_pipeline_refuses_before_any_work(saved):
    import os
    from concurrent.futures import ThreadPoolExecutor
    from pathlib import Path

    script = Path(__file__).resolve().parent.parent / "scripts" / "capacity.py"
    cases = [
        (["model_dir=model", "data_dir=other"], "was trained on dataset 'data', not on data_dir's 'other'"),
        (["model_dir=model", "data_dir=data", "corpus_dir=other_corpus"], "was not tokenized from data_dir"),
        (["model_dir=mlm", "data_dir=data"], "is a masked LM: capacity reads a causal model's bio loss"),
        (["model_dir=model", "data_dir=data", "quantize=8"], "capacity.quantize must be list, got 8"),
        (["model_dir=model", "data_dir=data", "out=data/meta.json/x"], "is not writable"),
    ]

    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    def call(args):
        return run_in_fork([script, *args], cwd=saved, timeout=300, env=env)

    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(call, [args for args, _ in cases]))
    for (args, message), r in zip(cases, results, strict=True):
        assert r.returncode == 2 and r.stderr.startswith("error: ") and message in r.stderr, (args, r.stderr)
        assert r.stderr.count("\n") == 1, r.stderr
    assert not (saved / "capacity").exists()
