"""The roofline of a training step on this machine: what its matrix units allow at the model's own
shapes, and how much of it a training loop reaches.

Every matrix product of one step, forward and backward, is listed with its shape: for each linear
layer ``y = x W`` (x: T x k, W: k x n, T tokens) the forward T x k @ k x n, the input gradient
T x n @ n x k and the weight gradient k x T @ T x n; for attention, per sequence and head, QK^T and
AV and their four gradients (full ctx x ctx products: the kernels compute the masked half too). Each
shape is timed alone with torch at a dtype and thread count; the roofline is the step's matmul FLOPs
over the time those products take at their measured rates. Softmax, norms, activations, the loss
and the optimizer are left out: they are what a loop at 100% of this roofline would have removed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from biolab.errors import ConfigError
from biolab.model import ModelConfig


@dataclass(frozen=True)
class MatMul:
    """``count`` products of shape m x k @ k x n, each over ``batch`` independent pairs (bmm)."""

    name: str
    m: int
    k: int
    n: int
    batch: int = 1
    count: int = 1

    @property
    def flops(self) -> float:  # all ``count`` of them
        return 2.0 * self.m * self.k * self.n * self.batch * self.count


def linear_layers(cfg: ModelConfig, vocab: int) -> list[tuple[str, int, int, int]]:
    """(name, in features, out features, layers) of every weight matrix a token goes through."""
    d, ff = cfg.d_model, cfg.ff_dim
    if cfg.arch in ("gpt_neox", "gpt2"):
        attn = [("qkv", d, 3 * d), ("attn_out", d, d)]
        mlp = [("mlp_up", d, ff), ("mlp_down", ff, d)] if ff else []
    elif cfg.arch == "llama":
        attn = [("q", d, d), ("k", d, d), ("v", d, d), ("attn_out", d, d)]
        mlp = [("mlp_gate", d, ff), ("mlp_up", d, ff), ("mlp_down", ff, d)] if ff else []
    else:
        raise ConfigError(f"the roofline knows gpt_neox, gpt2 and llama shapes, not model.arch={cfg.arch}")
    return [(name, i, o, cfg.n_layer) for name, i, o in attn + mlp] + [("lm_head", d, vocab, 1)]


def step_matmuls(cfg: ModelConfig, vocab: int, batch: int, ctx: int) -> list[MatMul]:
    """Every matrix product of one training step (forward and backward) of ``batch`` x ``ctx`` tokens."""
    tokens, hd, pairs = batch * ctx, cfg.head_dim, batch * cfg.n_head
    out = []
    for name, i, o, layers in linear_layers(cfg, vocab):
        out += [MatMul(f"{name} fwd", tokens, i, o, count=layers),
                MatMul(f"{name} grad input", tokens, o, i, count=layers),
                MatMul(f"{name} grad weight", i, tokens, o, count=layers)]  # fmt: skip
    out += [
        MatMul("attn QK^T fwd", ctx, hd, ctx, pairs, cfg.n_layer),
        MatMul("attn AV fwd", ctx, ctx, hd, pairs, cfg.n_layer),
        # dQ = dS K, dK = dS^T Q, dV = P^T dO: ctx x ctx @ ctx x hd; dP = dO V^T: ctx x hd @ hd x ctx
        MatMul("attn grads dQ dK dV", ctx, ctx, hd, pairs, 3 * cfg.n_layer),
        MatMul("attn grad dP", ctx, hd, ctx, pairs, cfg.n_layer),
    ]
    return out


def matmul_gflops(mm: MatMul, dtype: torch.dtype, min_seconds: float = 0.2) -> float:
    """GFLOP/s of one product of ``mm``'s shape at ``dtype`` on the current torch threads."""
    a = torch.randn(mm.batch, mm.m, mm.k).to(dtype)
    b = torch.randn(mm.batch, mm.k, mm.n).to(dtype)
    a, b = (a[0], b[0]) if mm.batch == 1 else (a, b)
    product = torch.mm if mm.batch == 1 else torch.bmm
    for _ in range(3):  # kernel selection and caches
        product(a, b)
    runs, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < min_seconds:
        product(a, b)
        runs += 1
    return 2.0 * mm.m * mm.k * mm.n * mm.batch * runs / elapsed / 1e9


def roofline(matmuls: list[MatMul], dtype: torch.dtype, threads: int, tokens: int,
             min_seconds: float = 0.2) -> dict:  # fmt: skip
    """The measured rate of each shape, and the tokens/s of a step doing nothing but these products."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        rates = [matmul_gflops(mm, dtype, min_seconds) for mm in matmuls]
    finally:
        torch.set_num_threads(before)
    seconds = sum(mm.flops / (rate * 1e9) for mm, rate in zip(matmuls, rates, strict=True))
    flops = sum(mm.flops for mm in matmuls)
    return {
        "gflops_per_s": {mm.name: round(rate, 1) for mm, rate in zip(matmuls, rates, strict=True)},
        "step_matmul_gflops_per_s": round(flops / seconds / 1e9, 1),
        "roofline_tokens_per_s": round(tokens / seconds),
    }
