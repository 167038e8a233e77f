"""The roofline's shapes and FLOPs (known answers), and its arithmetic on given rates."""

import math

import pytest
import torch

from biolab.errors import ConfigError
from biolab.model import ModelConfig, flops_per_token
from biolab.train import roofline as rl

TINY = ModelConfig(name="t", n_layer=2, n_head=2, d_model=32, max_positions=64)


def test_a_steps_matmul_flops_are_palms_count_plus_the_lm_head():
    vocab, batch, ctx = 300, 4, 16
    flops = sum(m.flops for m in rl.step_matmuls(TINY, vocab, batch, ctx)) / (batch * ctx)
    d, ff = TINY.d_model, TINY.ff_dim
    body = TINY.n_layer * (d * 3 * d + d * d + d * ff + ff * d)  # weights a token passes, head aside
    assert flops == pytest.approx(flops_per_token(TINY, body, ctx) + 6 * d * vocab)


def test_each_linear_layer_has_its_forward_and_both_gradients():
    names = [m.name for m in rl.step_matmuls(TINY, 300, 4, 16)]
    for layer in ("qkv", "attn_out", "mlp_up", "mlp_down", "lm_head"):
        assert [n for n in names if n.startswith(layer + " ")] == [
            f"{layer} fwd",
            f"{layer} grad input",
            f"{layer} grad weight",
        ]
    llama = {name for name, *_ in rl.linear_layers(ModelConfig(name="l", arch="llama", n_head=2), 300)}
    assert llama == {"q", "k", "v", "attn_out", "mlp_gate", "mlp_up", "mlp_down", "lm_head"}
    no_mlp = {name for name, *_ in rl.linear_layers(ModelConfig(name="m", d_ff=0), 300)}
    assert no_mlp == {"qkv", "attn_out", "lm_head"}
    with pytest.raises(ConfigError, match="roofline knows"):
        rl.linear_layers(ModelConfig(name="b", arch="modernbert"), 300)


def test_the_roofline_is_the_steps_flops_over_the_time_at_each_shapes_rate(monkeypatch):
    matmuls = [rl.MatMul("a", 8, 8, 8), rl.MatMul("b", 4, 4, 4, batch=2, count=3)]
    rates = {"a": 2.0, "b": 0.5}  # GFLOP/s
    monkeypatch.setattr(rl, "matmul_gflops", lambda mm, dtype, min_seconds: rates[mm.name])
    got = rl.roofline(matmuls, torch.float32, threads=1, tokens=10)
    seconds = matmuls[0].flops / 2e9 + matmuls[1].flops / 0.5e9
    assert got["roofline_tokens_per_s"] == round(10 / seconds)
    total = matmuls[0].flops + matmuls[1].flops
    assert got["step_matmul_gflops_per_s"] == pytest.approx(total / seconds / 1e9, abs=0.1)
    assert got["gflops_per_s"] == rates


@pytest.mark.parametrize("batch", [1, 3])
def test_a_shape_is_timed_to_a_positive_rate(batch):
    rate = rl.matmul_gflops(rl.MatMul("x", 16, 8, 4, batch=batch), torch.float32, min_seconds=0.01)
    assert rate > 0 and math.isfinite(rate)


def test_the_roofline_bench_sets_our_loop_beside_each_roofline(tmp_path):
    from biolab.data.dataset import DataConfig
    from biolab.data.tokens import Corpus, prepare_corpus
    from biolab.train.bench import bench_roofline
    from biolab.train.config import TrainConfig

    corpus = Corpus(prepare_corpus(tmp_path, DataConfig(n_people=40), vocab_size=300))
    cfg = TrainConfig(steps=2, batch_size=2, ctx=16, warmup_steps=1, log_every=1)
    result = bench_roofline(corpus, TINY, cfg, warmup=1, threads=(1,), min_seconds=0.01)
    assert set(result["roofline"]) == {"float32 1 thread(s)", "bfloat16 1 thread(s)"}
    assert set(result["our_loop_tokens_per_s"]) == {"no 1 thread(s)", "bf16 1 thread(s)"}
    assert len(result["our_loop_share_of_roofline"]) == 4
    assert all(v > 0 for v in result["our_loop_share_of_roofline"].values())
    assert result["matmul_flops_per_token"] > result["palm_flops_per_token_no_lm_head"]
