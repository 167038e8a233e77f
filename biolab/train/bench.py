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
from biolab.model import ModelConfig, build_model
from biolab.train.pretrain import TrainConfig, make_stream, pretrain


def _windows(corpus: Corpus, cfg: TrainConfig) -> np.ndarray:
    return make_stream(corpus, cfg).next_windows(cfg.batch_size * cfg.steps)


def _fresh_model(corpus: Corpus, model_cfg: ModelConfig, cfg: TrainConfig):
    torch.manual_seed(cfg.seed)
    return build_model(model_cfg, corpus.vocab_size, corpus.eos, corpus.pad, corpus.eos)


def bench_plain(corpus: Corpus, model_cfg: ModelConfig, cfg: TrainConfig, warmup: int) -> float:
    model = _fresh_model(corpus, model_cfg, cfg).train()
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, eps=cfg.adam_eps, weight_decay=cfg.weight_decay)
    data = torch.from_numpy(_windows(corpus, cfg))
    for step in range(cfg.steps):
        if step == warmup:
            start = time.perf_counter()
        x = data[step * cfg.batch_size : (step + 1) * cfg.batch_size]
        loss = model(input_ids=x, labels=x).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
    return (cfg.steps - warmup) * cfg.batch_size * cfg.ctx / (time.perf_counter() - start)


def bench_hf_trainer(corpus: Corpus, model_cfg: ModelConfig, cfg: TrainConfig, warmup: int) -> float:
    from transformers import Trainer, TrainerCallback, TrainingArguments

    data = torch.from_numpy(_windows(corpus, cfg))
    rows = [{"input_ids": x, "labels": x} for x in data]
    stamps: list[float] = []

    class Clock(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            stamps.append(time.perf_counter())

    with tempfile.TemporaryDirectory() as tmp:
        args = TrainingArguments(
            output_dir=tmp, per_device_train_batch_size=cfg.batch_size, max_steps=cfg.steps,
            learning_rate=cfg.lr, weight_decay=cfg.weight_decay, adam_epsilon=cfg.adam_eps,
            adam_beta2=cfg.adam_beta2, max_grad_norm=cfg.grad_clip, warmup_steps=cfg.warmup_steps,
            lr_scheduler_type="cosine", save_strategy="no", report_to=[], logging_strategy="no",
            disable_tqdm=True, use_cpu=not torch.cuda.is_available(), bf16=torch.cuda.is_available(),
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
    corpus: Corpus, model_cfg: ModelConfig, cfg: TrainConfig, warmup: int = 5, repeats: int = 1
) -> dict:
    """Each loop ``repeats`` times, interleaved (so drifting machine load hits all three alike);
    reports the median and every run."""
    if cfg.steps % warmup:
        raise ValueError("steps must be a multiple of warmup")
    loops = {"biolab": bench_ours, "hf_trainer": bench_hf_trainer, "plain_torch": bench_plain}
    runs: dict[str, list[int]] = {k: [] for k in loops}
    for _ in range(repeats):
        for name, loop in loops.items():
            runs[name].append(round(loop(corpus, model_cfg, cfg, warmup)))
    return {
        "model": model_cfg.name,
        "batch_size": cfg.batch_size,
        "ctx": cfg.ctx,
        "steps_timed": cfg.steps - warmup,
        "tokens_per_s": {k: int(np.median(v)) for k, v in runs.items()},
        "tokens_per_s_runs": runs,
    }
