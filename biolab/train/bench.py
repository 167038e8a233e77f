"""Training throughput, side by side: our loop vs the HF Trainer vs a minimal PyTorch loop.

All three train the same model from the same initial weights on the same windows with the same
batch, AdamW settings and clipping; each reports tokens/s over the steps after ``warmup``.
"""

from __future__ import annotations

import json
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from biolab.data.tokens import Corpus
from biolab.device import pick_device
from biolab.model import ModelConfig, build_model, count_parameters, flops_per_token
from biolab.train.config import TrainConfig
from biolab.train.log import peak_flops
from biolab.train.pretrain import make_stream, mixed_precision, pretrain
from biolab.train.roofline import linear_layers, step_matmuls
from biolab.train.roofline import roofline as measure


def _windows(corpus: Corpus, cfg: TrainConfig) -> np.ndarray:
    return make_stream(corpus, cfg).next_windows(cfg.batch_size * cfg.steps)


def _fresh_model(corpus: Corpus, model_cfg: ModelConfig, cfg: TrainConfig):
    torch.manual_seed(cfg.seed)
    return build_model(model_cfg, corpus.vocab_size, corpus.eos, corpus.pad, corpus.eos)


def _sync(device: torch.device) -> None:
    """Wait for queued GPU work, so a clock reading covers it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench_plain(corpus: Corpus, model_cfg: ModelConfig, cfg: TrainConfig, warmup: int) -> float:
    """The textbook loop on pick_device's device, under bf16 autocast where ``cfg`` trains in bf16."""
    device = torch.device(pick_device())
    bf16 = mixed_precision(cfg, str(device)) == "bf16"
    model = _fresh_model(corpus, model_cfg, cfg).to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, eps=cfg.adam_eps, weight_decay=cfg.weight_decay)
    data = torch.from_numpy(_windows(corpus, cfg)).to(device)
    for step in range(cfg.steps):
        if step == warmup:
            _sync(device)
            start = time.perf_counter()
        x = data[step * cfg.batch_size : (step + 1) * cfg.batch_size]
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = model(input_ids=x, labels=x).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
    _sync(device)
    return (cfg.steps - warmup) * cfg.batch_size * cfg.ctx / (time.perf_counter() - start)


def bench_hf_trainer(corpus: Corpus, model_cfg: ModelConfig, cfg: TrainConfig, warmup: int) -> float:
    """transformers' Trainer on the same device and precision (its own bf16 where ``cfg``'s is)."""
    from transformers import Trainer, TrainerCallback, TrainingArguments

    device = torch.device(pick_device())
    data = torch.from_numpy(_windows(corpus, cfg))
    rows = [{"input_ids": x, "labels": x} for x in data]
    stamps: list[float] = []

    class Clock(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            _sync(device)
            stamps.append(time.perf_counter())

    with tempfile.TemporaryDirectory() as tmp:
        args = TrainingArguments(
            output_dir=tmp, per_device_train_batch_size=cfg.batch_size, max_steps=cfg.steps,
            learning_rate=cfg.lr, weight_decay=cfg.weight_decay, adam_epsilon=cfg.adam_eps,
            adam_beta2=cfg.adam_beta2, max_grad_norm=cfg.grad_clip, warmup_steps=cfg.warmup_steps,
            lr_scheduler_type="cosine", save_strategy="no", report_to=[], logging_strategy="no",
            disable_tqdm=True, use_cpu=device.type == "cpu", bf16=mixed_precision(cfg, str(device)) == "bf16",
            dataloader_num_workers=0, seed=cfg.seed, data_seed=cfg.seed,
        )  # fmt: skip
        model = _fresh_model(corpus, model_cfg, cfg)
        trainer = Trainer(model=model, args=args, train_dataset=rows, callbacks=[Clock()])
        trainer.train()
    # stamps[k] is the end of step k + 1; time the steps after `warmup`
    return (cfg.steps - warmup) * cfg.batch_size * cfg.ctx / (stamps[-1] - stamps[warmup - 1])


def bench_ours(corpus: Corpus, model_cfg: ModelConfig, cfg: TrainConfig, warmup: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "run"
        cfg = replace(cfg, log_every=warmup, eval_every=0, ckpt_every=0, wandb="disabled")
        pretrain(run, corpus, model_cfg, cfg, progress=False)
        rows = [json.loads(r) for r in (run / "metrics.jsonl").read_text().splitlines()]
    # each row's tokens_per_s covers the `warmup` steps since the previous row; skip the first
    timed = [r for r in rows if r["step"] > warmup]
    seconds = sum(warmup * cfg.batch_size * cfg.ctx / r["tokens_per_s"] for r in timed)
    return len(timed) * warmup * cfg.batch_size * cfg.ctx / seconds


def bench_pretrain(
    corpus: Corpus, model_cfg: ModelConfig, cfg: TrainConfig, warmup: int = 5, repeats: int = 1, emit=None
) -> dict:
    """Each loop ``repeats`` times, interleaved (so drifting machine load hits all three alike), on
    ``pick_device``'s device in ``cfg``'s precision there; reports the median and every run, and the
    MFU where the device's peak is known. ``emit`` gets the result so far after every loop's run
    (a bench cut short by a time limit still leaves what it measured)."""
    if cfg.steps % warmup:
        raise ValueError("steps must be a multiple of warmup")
    device = pick_device()
    loops = {"biolab": bench_ours, "hf_trainer": bench_hf_trainer, "plain_torch": bench_plain}
    runs: dict[str, list[int]] = {k: [] for k in loops}
    n_params = count_parameters(_fresh_model(corpus, model_cfg, cfg), embeddings=False)
    flops = flops_per_token(model_cfg, n_params, cfg.ctx)
    peak = peak_flops(device)

    def result() -> dict:
        medians = {k: int(np.median(v)) for k, v in runs.items() if v}
        return {
            "model": model_cfg.name, "batch_size": cfg.batch_size, "ctx": cfg.ctx,
            "steps_timed": cfg.steps - warmup, "torch_device": device,
            "precision": mixed_precision(cfg, device), "flops_per_token": round(flops),
            "peak_flops": peak, "tokens_per_s": medians, "tokens_per_s_runs": runs,
            "mfu": {k: round(v * flops / peak, 4) for k, v in medians.items()} if peak else None,
        }  # fmt: skip

    for _ in range(repeats):
        for name, loop in loops.items():
            runs[name].append(round(loop(corpus, model_cfg, cfg, warmup)))
            if emit is not None:
                emit(result())
    return result()


# (name, autocast dtype or None, attention implementation, torch.compile)
STEP_VARIANTS = (
    ("fp32 sdpa", None, "sdpa", False),
    ("fp32 eager", None, "eager", False),
    ("bf16 sdpa", torch.bfloat16, "sdpa", False),
    ("bf16 eager", torch.bfloat16, "eager", False),
    ("bf16 eager compiled", torch.bfloat16, "eager", True),
)


def _step_fn(model, opt, x, dtype, grad_clip: float):
    def step():
        with torch.autocast("cpu", dtype=dtype or torch.float32, enabled=dtype is not None):
            loss = model(input_ids=x, labels=x).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def bench_cpu_step(
    corpus: Corpus,
    model_cfg: ModelConfig,
    cfg: TrainConfig,
    warmup: int = 5,
    threads=(1, 2),
    top_ops: int = 8,
    variants=STEP_VARIANTS,
) -> dict:
    """ms per training step of the plain loop under each STEP_VARIANTS entry and thread count, the
    biggest ops of an fp32 and a bf16 step (share of CPU time), and our loop in fp32 vs bf16."""
    from torch.profiler import ProfilerActivity, profile

    x = torch.from_numpy(_windows(corpus, replace(cfg, steps=1)))
    ms: dict[str, dict[str, float]] = {}
    ops: dict[str, dict[str, float]] = {}
    before = torch.get_num_threads()
    try:
        for n in threads:
            torch.set_num_threads(n)
            for name, dtype, attn, compiled in variants:
                model = _fresh_model(corpus, model_cfg, cfg).train()
                model.set_attn_implementation(attn)
                opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, fused=True)
                step = _step_fn(torch.compile(model) if compiled else model, opt, x, dtype, cfg.grad_clip)
                for _ in range(warmup):
                    step()
                start = time.perf_counter()
                for _ in range(cfg.steps):
                    step()
                ms.setdefault(f"{n} threads", {})[name] = round(
                    1000 * (time.perf_counter() - start) / cfg.steps, 1
                )
                if n == threads[0] and name in ("fp32 sdpa", "bf16 eager"):
                    with profile(activities=[ProfilerActivity.CPU]) as prof:
                        for _ in range(3):
                            step()
                    events = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)
                    total = sum(e.self_cpu_time_total for e in events)
                    ops[name] = {
                        e.key: round(100 * e.self_cpu_time_total / total, 1) for e in events[:top_ops]
                    }
        torch.set_num_threads(threads[0])
        loop = {
            p: round(bench_ours(corpus, model_cfg, replace(cfg, precision=p), warmup)) for p in ("no", "bf16")
        }
    finally:
        torch.set_num_threads(before)
    return {
        "model": model_cfg.name,
        "batch_size": cfg.batch_size,
        "ctx": cfg.ctx,
        "steps_timed": cfg.steps,
        "ms_per_step": ms,
        "top_ops_pct_of_cpu_time": ops,
        f"our_loop_tokens_per_s_{threads[0]}_thread": {"fp32": loop["no"], "bf16": loop["bf16"]},
        "our_loop_bf16_over_fp32": round(loop["bf16"] / loop["no"], 2),
    }


def bench_stacked(model_cfg: ModelConfig, vocab: int, k: int, cfg: TrainConfig, warmup: int = 3) -> dict:
    """tokens/s of ``k`` models trained together (parameters stacked with ``torch.func``, one vmapped
    forward and backward, one AdamW over the stacked tensors) against the same ``k`` models stepped
    one after the other, on the same random windows and threads: is a sweep of small models faster
    as one batched model? (Eager attention: the SDPA CPU kernel has no vmap rule for its backward.)"""
    import copy

    from torch.func import functional_call, grad_and_value, stack_module_state, vmap

    models = []
    for i in range(k):
        torch.manual_seed(cfg.seed + i)
        m = build_model(model_cfg, vocab, 0, 1, 0).train()
        m.set_attn_implementation("eager")
        models.append(m)
    x = torch.randint(0, vocab, (cfg.steps + warmup, k, cfg.batch_size, cfg.ctx))
    base = copy.deepcopy(models[0]).to("meta")
    params, buffers = stack_module_state(models)

    def loss(p, b, xi):
        return functional_call(base, (p, b), (xi,), {"labels": xi}).loss

    step = vmap(grad_and_value(loss))
    opt = torch.optim.AdamW(list(params.values()), lr=cfg.lr)
    for i in range(cfg.steps + warmup):
        if i == warmup:
            start = time.perf_counter()
        grads, _ = step(params, buffers, x[i])
        for name, p in params.items():
            p.grad = grads[name]
        opt.step()
        opt.zero_grad(set_to_none=True)
    stacked = cfg.steps * k * cfg.batch_size * cfg.ctx / (time.perf_counter() - start)
    opts = [torch.optim.AdamW(m.parameters(), lr=cfg.lr) for m in models]
    for i in range(cfg.steps + warmup):
        if i == warmup:
            start = time.perf_counter()
        for j, (m, o) in enumerate(zip(models, opts, strict=True)):
            m(input_ids=x[i, j], labels=x[i, j]).loss.backward()
            o.step()
            o.zero_grad(set_to_none=True)
    one_by_one = cfg.steps * k * cfg.batch_size * cfg.ctx / (time.perf_counter() - start)
    return {"models": k, "tokens_per_s_stacked": round(stacked),
            "tokens_per_s_one_after_another": round(one_by_one),
            "stacked_over_one_after_another": round(stacked / one_by_one, 2)}  # fmt: skip


def bench_roofline(corpus: Corpus, model_cfg: ModelConfig, cfg: TrainConfig, warmup: int = 5,
                   threads=(1, 2), min_seconds: float = 0.2) -> dict:  # fmt: skip
    """The matmul roofline of a ``cfg`` step of ``model_cfg`` (biolab.train.roofline) in fp32 and
    bf16 at each thread count, beside our loop's tokens/s there (fp32, and ``train.precision=bf16``
    as this machine runs it: fp32 on a CPU without native bf16), as a fraction of each."""
    tokens = cfg.batch_size * cfg.ctx
    matmuls = step_matmuls(model_cfg, corpus.vocab_size, cfg.batch_size, cfg.ctx)
    lines = {f"{d} {n} thread(s)": measure(matmuls, getattr(torch, d), n, tokens, min_seconds)
             for n in threads for d in ("float32", "bfloat16")}  # fmt: skip
    before = torch.get_num_threads()
    ours = {}
    try:
        for n in threads:
            torch.set_num_threads(n)
            for precision in ("no", "bf16"):
                ours[f"{precision} {n} thread(s)"] = round(
                    bench_ours(corpus, model_cfg, replace(cfg, precision=precision), warmup)
                )
    finally:
        torch.set_num_threads(before)
    share = {}
    for key, got in ours.items():
        precision, n = key.split(" ", 1)
        for d in ("float32", "bfloat16"):
            roof = lines[f"{d} {n}"]["roofline_tokens_per_s"]
            share[f"{precision} loop / {d} roofline, {n}"] = round(got / roof, 3)
    body = [layer for layer in linear_layers(model_cfg, corpus.vocab_size) if layer[0] != "lm_head"]
    n_params = sum(i * o * layers for _, i, o, layers in body)
    return {
        "matmuls": [vars(m) for m in matmuls],
        "matmul_flops_per_token": round(sum(m.flops for m in matmuls) / tokens),
        "palm_flops_per_token_no_lm_head": round(flops_per_token(model_cfg, n_params, cfg.ctx)),
        "roofline": lines,
        "bf16_asked_runs_as": mixed_precision(replace(cfg, precision="bf16")),
        "our_loop_tokens_per_s": ours,
        "our_loop_share_of_roofline": share,
    }
