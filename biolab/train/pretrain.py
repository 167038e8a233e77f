"""The training loop (``train``) and BIO / mixed BIO+QA pretraining on it (``pretrain``); QA
finetuning (``biolab.train.finetune``) runs in the same loop.

One loop serves a 1M-parameter model on a CPU and GPT-2 124M on GPUs (``accelerate launch`` for
several): AdamW, linear warmup then cosine to ``min_lr_ratio``, gradient accumulation to the global
batch, clipping, bf16 autocast on GPU, optional ``torch.compile``, atomic checkpoints that resume
to the same weights, metrics.jsonl + wandb (offline by default).

A step whose loss or gradient norm is not finite is never applied, and weights that are not finite
are never saved: the run stops with a TrainingError naming the last checkpoint with finite weights.
The run folder's life cycle (resume with the same config, the overwrite swap, atomic checkpoints) is
biolab.train.run_folder; what a run logs (metrics.jsonl, wandb, MFU) is biolab.train.log; its config
is biolab.train.config. ``train`` reads top to bottom: set up, resume, the step loop, save.
"""

from __future__ import annotations

import json
import math
import time
import warnings
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import asdict, replace
from functools import cache
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from biolab.console import report_progress
from biolab.data.dataset import read_meta
from biolab.data.fresh import fresh_bio_stream, fresh_bios
from biolab.data.masking import with_mask_token
from biolab.data.packing import STREAM_JUNK, STREAM_QA, MixedStream, WindowStream
from biolab.data.tokens import Corpus, TextSet
from biolab.device import keep_freed_memory, pick_device
from biolab.errors import ConfigError
from biolab.io import write_json
from biolab.model import ModelConfig, build_model, count_parameters, flops_per_token
from biolab.status import write_status
from biolab.train.config import TrainConfig, TrainingError
from biolab.train.lm_loss import fused_head, lm_loss
from biolab.train.log import (
    Logger,
    check_wandb_meta,
    peak_flops,
)
from biolab.train.metrics import bio_first_token_accuracy, corpus_attributes, eval_bios
from biolab.train.mlm import MaskedStream
from biolab.train.run_folder import (
    CKPT_RECORD,
    StateBox,
    check_finite,
    check_run_dir,
    last_good,
    save_checkpoint,
    save_model,
    swap_in,
    train_section,
    training_record,
    truncate_metrics,
    work_and_resume,
)


def micro_batches(cfg: TrainConfig, world: int) -> tuple[int, int]:
    """(sequences per process per step, micro batches per step); errors if they do not divide."""
    if cfg.batch_size % world:
        raise ConfigError(f"train.batch_size={cfg.batch_size} does not split over {world} processes")
    per_process = cfg.batch_size // world
    micro = cfg.micro_batch_size or per_process
    if micro < 1 or per_process % micro:
        raise ConfigError(
            f"train.batch_size={cfg.batch_size} over {world} process(es) is {per_process} sequences, "
            f"not a multiple of train.micro_batch_size={micro}"
        )
    return per_process, per_process // micro


def make_stream(corpus: Corpus, cfg: TrainConfig, qa_texts: TextSet | None = None) -> MixedStream:
    """BIO windows (the corpus's bios, or with ``cfg.fresh_bios`` a fresh rendering of every person
    each pass), mixed with windows of P_train QA texts (the corpus's QA, or ``qa_texts``, e.g. a
    Part 3.2 task set's items) with probability ``cfg.qa_ratio``, or of junk bios with
    ``cfg.junk_fraction``."""
    if cfg.fresh_bios:
        bio = fresh_bio_stream(corpus, cfg.ctx, cfg.seed)
    else:
        bio = WindowStream(corpus.bio_ids, corpus.bios["offsets"], corpus.eos, cfg.ctx, cfg.seed)
    if qa_texts is not None and cfg.qa_ratio <= 0:
        raise ConfigError("mixed training on task items needs train.qa_ratio > 0")
    if cfg.junk_fraction > 0:
        junk = corpus.junk_set()
        if junk is None:
            raise ConfigError(f"train.junk_fraction={cfg.junk_fraction} needs junk bios: set junk.people > 0")
        other = WindowStream(junk.ids, junk.offsets, corpus.eos, cfg.ctx, cfg.seed, stream=STREAM_JUNK)
        return MixedStream(bio, other, cfg.junk_fraction, cfg.seed)
    qa = None
    if cfg.qa_ratio > 0:  # QAs of P_train people only
        texts = corpus.qa_set() if qa_texts is None else qa_texts
        rows = texts.train_rows()
        qa = WindowStream(texts.ids, texts.offsets, corpus.eos, cfg.ctx, cfg.seed, rows, STREAM_QA)
    return MixedStream(bio, qa, cfg.qa_ratio, cfg.seed)


@cache
def cpu_bf16_is_fast() -> bool:
    """Whether this CPU multiplies in bf16 at least as fast as in fp32. Without native bf16 (an
    AVX2-only x86, say) torch emulates it: a 256 x 256 matmul took 18.6 ms in bf16 against 1.0 ms in
    fp32 on an AVX2 EPYC, so a bf16 preset's 10 minutes become hours. Costs ~0.2 s, once a process."""
    a = torch.randn(256, 256)

    def seconds(x: torch.Tensor) -> float:
        x @ x  # the first call pays for kernel selection
        start = time.perf_counter()
        for _ in range(8):
            x @ x
        return time.perf_counter() - start

    return seconds(a.bfloat16()) <= seconds(a)


def mixed_precision(cfg: TrainConfig, device: str | None = None) -> str:
    """The mixed precision ``cfg.precision`` means on ``device`` (None: ``pick_device``'s): auto is
    bf16 on CUDA only; bf16 asked on a CPU that only emulates it trains in fp32, with a warning (the
    run's config.json records ``precision_used``)."""
    kind = torch.device(pick_device(device)).type
    if cfg.precision == "auto":
        return "bf16" if kind == "cuda" else "no"
    if cfg.precision == "bf16" and kind == "cpu" and not cpu_bf16_is_fast():
        _warn_once(
            "train.precision=bf16: this CPU computes bf16 more slowly than fp32 (no native bf16), "
            "so training runs in fp32"
        )
        return "no"
    return cfg.precision


@cache
def _warn_once(message: str) -> None:
    warnings.warn(message, stacklevel=3)


def cpu_autocast(cfg: TrainConfig, device: str | None = None) -> bool:
    """bf16 on the CPU: our own ``torch.autocast`` rather than accelerate's, whose precision is
    process-wide state (a bf16 pretraining, then an fp32 finetune in the same process would be
    refused)."""
    device = pick_device(device)
    return torch.device(device).type == "cpu" and mixed_precision(cfg, device) == "bf16"


def make_accelerator(cfg: TrainConfig):
    """An Accelerator on ``pick_device``'s device (the one every model-running stage uses) with
    ``cfg``'s precision there; bf16 on the CPU is left to ``cpu_autocast``."""
    from accelerate import Accelerator

    device = pick_device()
    precision = "no" if cpu_autocast(cfg, device) else mixed_precision(cfg, device)
    return Accelerator(mixed_precision=precision, cpu=torch.device(device).type == "cpu")


def pretrain(
    run_dir: str | Path,
    corpus: Corpus,
    model_cfg: ModelConfig,
    cfg: TrainConfig,
    accelerator=None,
    overwrite: bool = False,
    on_step: Callable[[int, torch.nn.Module], None] | None = None,
    progress: bool = True,
    qa_texts: TextSet | None = None,
    wandb_meta: dict | None = None,
) -> dict:
    """BIO (or mixed BIO+QA) pretraining of a fresh ``model_cfg`` model into ``run_dir``; mixed
    training takes its QA windows from ``qa_texts`` when given (a Part 3.2 task set's items).
    ``wandb_meta``: see ``train``."""
    cfg.validate()
    if cfg.ctx > model_cfg.max_positions:
        raise ConfigError(f"train.ctx={cfg.ctx} exceeds model.max_positions={model_cfg.max_positions}")
    exposures = None
    if cfg.exposures is not None:
        exposures = exposure_plan(corpus, cfg)
        cfg = replace(cfg, steps=exposures["steps"], batch_size=exposures["batch_size"])
    stream = make_stream(corpus, cfg, qa_texts)  # before anything is written: a bad mix fails here
    tokenizer = corpus.tokenizer()
    evaluate = None  # BIO first-token accuracy reads next-token predictions: causal models only
    if model_cfg.masked_lm:
        tokenizer = with_mask_token(tokenizer)
        stream = MaskedStream(stream, tokenizer, cfg.seed)
    else:
        sample, attributes = eval_bios(corpus, cfg.eval_people), corpus_attributes(corpus)

        def evaluate(model) -> dict:
            row = {}
            for split, idx in sample.items():
                acc = bio_first_token_accuracy(model, corpus, idx, attributes=attributes)
                row.update({f"bio_first_token/{split}/{a}": round(v, 4) for a, v in acc.items()})
            return row

    def make_model():
        vocab = len(tokenizer) if model_cfg.masked_lm else corpus.vocab_size  # + the mask token
        return build_model(model_cfg, vocab, corpus.eos, corpus.pad, corpus.eos)

    return train(
        run_dir, make_model, tokenizer, stream, cfg, evaluate=evaluate,
        config={"model": asdict(model_cfg), **({"exposures": exposures} if exposures else {})},
        flops_cfg=model_cfg, accelerator=accelerator,
        overwrite=overwrite, on_step=on_step, progress=progress, wandb_meta=wandb_meta,
        training_data=corpus_training_data(corpus),
    )  # fmt: skip


def exposure_plan(corpus: Corpus, cfg: TrainConfig) -> dict:
    """The steps that show every person's knowledge ``cfg.exposures`` times (Part 3.3: an exposure is
    one bio of the person, not a pass: with M entries per person, E exposures are E / M passes; with
    ``cfg.fresh_bios`` every pass is one fresh bio per person, so E exposures are E passes), and
    the exposures those whole steps give. BIO windows only: mixed training's QA windows are extra.
    With ``cfg.min_steps`` the batch is halved (while it stays a whole number of micro batches) until
    there are that many steps: the paper's Remark A.2, few exposures need enough optimizer steps."""
    n_bios = corpus.n_bios
    people = len(np.unique(corpus.bios["person_id"]))
    share = 1.0 - cfg.qa_ratio - cfg.junk_fraction  # junk windows, like QA ones, are extra
    if share <= 0:
        raise ConfigError("train.exposures counts BIO windows: it needs train.qa_ratio < 1")
    if cfg.fresh_bios:  # one exposure: one fresh bio and its EOS, measured on a rendered sample
        bio_tokens = fresh_bios(corpus, cfg.seed).mean_tokens(corpus.eos)
        pass_bios = people  # a pass shows every person once
    else:
        pass_tokens = int(corpus.bios["offsets"][-1]) + n_bios  # each bio + its EOS
        bio_tokens = pass_tokens / n_bios  # one exposure: one bio and its EOS
        pass_bios = n_bios
    micro = cfg.micro_batch_size or 1
    batch = cfg.batch_size

    def steps_for(b: int) -> int:
        return max(1, math.ceil(cfg.exposures * people * bio_tokens / (b * cfg.ctx * share)))

    while cfg.min_steps and steps_for(batch) < cfg.min_steps and batch % 2 == 0 and (batch // 2) % micro == 0:
        batch //= 2
    steps = steps_for(batch)
    if steps <= cfg.warmup_steps:
        raise ConfigError(
            f"train.exposures={cfg.exposures} is {steps} steps, not more than "
            f"train.warmup_steps={cfg.warmup_steps}"
        )
    got = steps * batch * cfg.ctx * share / (people * bio_tokens)
    return {"asked": cfg.exposures, "steps": steps, "batch_size": batch, "exposures": round(got, 2),
            "people": people, "entries_per_person": round(pass_bios / people, 4),
            "passes": round(got * people / pass_bios, 3),
            "tokens_per_exposure": round(bio_tokens, 2),
            **({"fresh_bios": True} if cfg.fresh_bios else {})}  # fmt: skip


def corpus_training_data(corpus: Corpus) -> dict:
    """The record of the dataset a corpus was tokenized from: its name and its files' sha256."""
    try:
        name = read_meta(corpus.meta["data_dir"])["config"]["name"]
    except (OSError, KeyError, ValueError):  # a dataset moved since: its hashes still identify it
        name = None
    return {"name": name, "data_dir": corpus.meta["data_dir"], "sha256": corpus.meta["data_sha256"]}


def train(
    run_dir: str | Path,
    make_model: Callable[[], torch.nn.Module],
    tokenizer,
    batches,
    cfg: TrainConfig,
    evaluate: Callable[[torch.nn.Module], dict] | None = None,
    config: dict | None = None,
    flops_cfg: ModelConfig | None = None,
    accelerator=None,
    overwrite: bool = False,
    on_step: Callable[[int, torch.nn.Module], None] | None = None,
    progress: bool = True,
    wandb_meta: dict | None = None,
    training_data: dict | None = None,
) -> dict:
    """The one training loop. ``batches.next_batch(n)`` gives numpy ``input_ids`` (and optionally
    ``labels``, ``attention_mask``) and has ``state_dict``; ``make_model()`` is called after seeding,
    and only its trainable parameters are optimised. Resumes from ``run_dir``'s last checkpoint;
    returns the last logged metrics; ``run_dir/model`` gets ``save_pretrained`` (a peft model saves
    its adapter). ``wandb_meta`` (optional ``name``, default the folder's name; ``group``; ``tags``;
    ``config``, merged into the wandb config) goes to ``wandb.init``. ``training_data`` (the
    dataset's name and file hashes, ``corpus_training_data``) is saved beside the final weights, so
    evaluate and probe can tell a model's own dataset from another."""
    from transformers import get_cosine_with_min_lr_schedule_with_warmup

    run_dir = Path(run_dir)
    cfg.validate()
    meta = check_wandb_meta(wandb_meta)
    check_run_dir(run_dir, overwrite)
    accelerator = accelerator or make_accelerator(cfg)
    keep_freed_memory(accelerator.device)
    on_cpu = accelerator.device.type == "cpu"
    on_cpu_bf16 = cpu_autocast(cfg, str(accelerator.device))
    per_process, n_micro = micro_batches(cfg, accelerator.num_processes)
    record = training_record(cfg, config, training_data, run_dir)
    work, resume = work_and_resume(accelerator, run_dir, overwrite, record, train_section(config))
    started = time.time()
    main = accelerator.is_main_process
    if main:
        work.mkdir(parents=True, exist_ok=True)
        used = "bf16" if on_cpu_bf16 else accelerator.mixed_precision
        write_json(work / "config.json", {**(config or {}), "train": asdict(cfg), "precision_used": used})
        write_status(work, "running", started)

    torch.manual_seed(cfg.seed)  # the same initial weights on every process
    model = make_model()
    if on_cpu_bf16:
        # Measured on a 2-core AVX-512 BF16 CPU (tiny model, 32 x 128, one thread): eager attention
        # under bf16 autocast 228 ms/step against 304 for SDPA's CPU flash kernel and 484 in fp32
        # (results/bench/cpu_step.json). Eager in chunks of a few sequences (scores kept in cache) was
        # 1.6x faster for one attention layer alone but no faster in the loop (results/bench/cpu_levers.md).
        model.set_attn_implementation("eager")
    n_params = count_parameters(model, embeddings=False)
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    fused = accelerator.device.type in ("cuda", "cpu")  # fused kernels exist there since torch 2.4
    optimizer = torch.optim.AdamW(
        groups, lr=cfg.lr, betas=(0.9, cfg.adam_beta2), eps=cfg.adam_eps, fused=fused
    )
    scheduler = get_cosine_with_min_lr_schedule_with_warmup(
        optimizer, cfg.warmup_steps, cfg.steps, min_lr_rate=cfg.min_lr_ratio
    )
    model, optimizer = accelerator.prepare(model, optimizer)
    if cfg.compile:
        model = torch.compile(model)
    accelerator.register_for_checkpointing(scheduler, StateBox(batches))

    start_step = 0
    if resume is not None:
        accelerator.load_state(str(resume / "state"))
        start_step = json.loads((resume / CKPT_RECORD).read_text())["step"]
        if main:
            print(f"resuming {run_dir} from step {start_step}")
    if main:  # rows logged after the step we start from (or by an attempt killed before any checkpoint)
        truncate_metrics(work / "metrics.jsonl", start_step)

    logger = Logger(run_dir, work, cfg, {**(config or {}), "train": asdict(cfg)}, main, meta)
    unwrapped = accelerator.unwrap_model(model)
    # The LM head and loss fused (biolab.train.lm_loss) where it was measured: on the CPU, unwrapped
    # and uncompiled. The GPU path keeps transformers' loss.
    alone = on_cpu and accelerator.num_processes == 1 and not cfg.compile
    fused_loss = fused_head(unwrapped) if alone else None
    peak = peak_flops(accelerator.device)
    flops_tok = flops_per_token(flops_cfg, n_params, cfg.ctx) if flops_cfg is not None else None
    rank, micro = accelerator.process_index, per_process // n_micro
    bar = tqdm(total=cfg.steps, initial=start_step, desc=run_dir.name, disable=not (main and progress))
    if main:  # the pipeline's console shows the step a resumed run starts from before its first step
        report_progress(start_step, cfg.steps)
    model.train()
    t_last, tokens = time.perf_counter(), 0
    last: dict = {}
    device = accelerator.device
    try:
        for step in range(start_step, cfg.steps):
            batch = batches.next_batch(cfg.batch_size)
            batch = {k: v[rank * per_process : (rank + 1) * per_process] for k, v in batch.items()}
            tokens += batch["input_ids"].size * accelerator.num_processes
            loss_sum = torch.zeros((), device=device)
            for m in range(n_micro):
                part = {
                    k: torch.from_numpy(v[m * micro : (m + 1) * micro]).to(device) for k, v in batch.items()
                }
                part.setdefault("labels", part["input_ids"])
                sync = nullcontext() if m == n_micro - 1 else accelerator.no_sync(model)
                with sync:
                    with (
                        torch.autocast("cpu", dtype=torch.bfloat16) if on_cpu_bf16 else accelerator.autocast()
                    ):
                        loss = lm_loss(model, part, fused_loss) / n_micro
                    accelerator.backward(loss)
                loss_sum += loss.detach()
            loss_value = accelerator.reduce(loss_sum, reduction="mean").item()
            if not math.isfinite(loss_value):
                raise TrainingError(f"non-finite loss {loss_value} at step {step + 1}; {last_good(work)}")
            grad_norm = float(accelerator.clip_grad_norm_(params, cfg.grad_clip))
            # Every process sees the same reduced loss and synced gradients, so all stop together.
            # With fp16 loss scaling an overflow is routine: the scaler skips that step itself.
            if not math.isfinite(grad_norm) and accelerator.scaler is None:
                raise TrainingError(
                    f"non-finite gradient norm {grad_norm} at step {step + 1} (loss {loss_value:.4f}); "
                    f"{last_good(work)}"
                )
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            done = step + 1
            bar.update(1)
            if on_step is not None:
                on_step(done, unwrapped)
            if done % cfg.log_every == 0 or done == cfg.steps:
                now = time.perf_counter()
                tok_s = tokens / (now - t_last)
                t_last, tokens = now, 0
                last = {"step": done, "loss": round(loss_value, 5), "lr": scheduler.get_last_lr()[0],
                        "grad_norm": round(grad_norm, 4), "tokens_per_s": round(tok_s, 1)}  # fmt: skip
                if peak and flops_tok:
                    last["mfu"] = round(tok_s * flops_tok / (peak * accelerator.num_processes), 4)
                logger.log(last)
                bar.set_postfix(loss=f"{loss_value:.3f}", tok_s=f"{tok_s:.0f}")
            if evaluate and cfg.eval_every and (done % cfg.eval_every == 0 or done == cfg.steps) and main:
                row = {"step": done, **evaluate(unwrapped)}
                logger.log(row)
                last.update(row)
            if main:  # the logged row's loss: one step's loss on a small batch jumps about
                report_progress(done, cfg.steps, last.get("loss", loss_value), last.get("tokens_per_s"))
            if cfg.ckpt_every and done % cfg.ckpt_every == 0 and done < cfg.steps:
                save_checkpoint(accelerator, unwrapped, tokenizer, work, done, cfg.keep_ckpts, record)
        check_finite(unwrapped, cfg.steps, work)  # the final model, on every process
    except BaseException as err:
        bar.close()
        logger.close()
        if main:
            write_status(work, "failed", started, error=f"{type(err).__name__}: {err}")
        raise
    bar.close()
    logger.close()  # before the swap: wandb writes under run_dir while it runs
    accelerator.wait_for_everyone()
    if main:
        save_model(unwrapped, tokenizer, work / "model", training_data)
        write_status(work, "done", started, steps=cfg.steps, final=last, params_no_embeddings=n_params)
        if work != run_dir:
            swap_in(work, run_dir)
    accelerator.wait_for_everyone()
    return last
