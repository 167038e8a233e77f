"""The training loop (``train``) and BIO / mixed BIO+QA pretraining on it (``pretrain``); QA
finetuning (``biolab.train.finetune``) runs in the same loop.

One loop serves a 1M-parameter model on a CPU and GPT-2 124M on GPUs (``accelerate launch`` for
several): AdamW, linear warmup then cosine to ``min_lr_ratio``, gradient accumulation to the global
batch, clipping, bf16 autocast on GPU, optional ``torch.compile``, atomic checkpoints that resume
to the same weights, metrics.jsonl + wandb (offline by default).

A step whose loss or gradient norm is not finite is never applied, and weights that are not finite
are never saved: the run stops with a TrainingError naming the last checkpoint with finite weights.
Each checkpoint records the config that shaped its weights and its files' sha256: a run resumed with
another config stops before any work (``LOGGING_KEYS`` may change), and a damaged newest checkpoint
is moved aside for the newest intact one.
Overwriting a finished run trains the new one in a hidden sibling folder, ``.RUN.overwrite``, and
moves its outputs over the old ones only once it is done: a killed overwrite leaves the old run as
it was (and the next overwrite starts that folder afresh).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import sys
import time
import warnings
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import asdict, dataclass, replace
from functools import cache
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from biolab.config import from_dict
from biolab.console import output_captured, report_progress
from biolab.data.dataset import read_meta
from biolab.data.masking import with_mask_token
from biolab.data.packing import STREAM_QA, MixedStream, WindowStream
from biolab.data.tokens import Corpus, TextSet
from biolab.device import keep_freed_memory, pick_device
from biolab.errors import BiolabError, ConfigError
from biolab.io import check_writable, file_sha256, write_json
from biolab.model import TRAINING_DATA, ModelConfig, build_model, count_parameters, flops_per_token
from biolab.status import is_done, write_status
from biolab.train.lm_loss import fused_head, lm_loss
from biolab.train.metrics import bio_first_token_accuracy, corpus_attributes, eval_bios
from biolab.train.mlm import MaskedStream

PEAK_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12}  # dense bf16, for MFU
WANDB_MODES = ("offline", "online", "disabled")
WANDB_META = {"name": (str, "a str"), "group": (str, "a str"), "tags": (list, "a list of str"),
              "config": (dict, "a dict")}  # fmt: skip
RUN_MARKERS = ("status.json", "config.json")  # a folder holding either is a training run
# What scripts/pretrain.py and finetune.py put in the run folder before training starts.
PREPARED = ("data", "corpus")
# What an overwrite replaces (status.json first); the rest of the folder (data, corpus, eval, wandb) stays.
RUN_OUTPUTS = ("status.json", "config.json", "metrics.jsonl", "checkpoints", "model")
CKPT_RECORD = "trainer.json"  # a checkpoint's step, training-shaping config and files' sha256


class TrainingError(BiolabError):
    """Training stopped (e.g. a non-finite loss); the last good checkpoint is kept."""


@dataclass(frozen=True)
class TrainConfig:
    name: str = "tiny"
    steps: int = 1000
    exposures: int | None = None  # Part 3.3: steps so that each person's bio is seen this often (over steps)
    min_steps: int | None = None  # with exposures: halve batch_size until there are this many steps
    batch_size: int = 32  # sequences per optimizer step, over all processes
    micro_batch_size: int | None = None  # sequences per forward per process; default: all at once
    ctx: int = 128
    lr: float = 1e-3
    min_lr_ratio: float = 0.1  # cosine decays to lr * min_lr_ratio
    warmup_steps: int = 100
    weight_decay: float = 0.1
    adam_eps: float = 1e-6
    adam_beta2: float = 0.98
    grad_clip: float = 1.0
    seed: int = 0
    qa_ratio: float = 0.0  # mixed training: share of all-QA windows (paper QAr = 0.8); 0 = BIO only
    precision: str = "auto"  # auto (bf16 on CUDA, fp32 on CPU) | no | bf16 | fp16
    compile: bool = False
    log_every: int = 10
    eval_every: int = 100  # BIO first-token accuracy; 0 = never
    eval_people: int = 200  # per split
    ckpt_every: int = 500  # 0 = only the final model
    keep_ckpts: int = 2
    wandb: str = "offline"  # offline | online | disabled

    @classmethod
    def from_dict(cls, d: dict, section: str = "train") -> TrainConfig:
        """``section``: where these keys sit in the user's config (``finetune.train`` for a finetune's),
        the name every error gives them."""
        cfg = from_dict(cls, d, section, validate=False)
        cfg.validate(section)
        return cfg

    def validate(self, section: str = "train") -> None:
        for k in ("steps", "batch_size", "ctx", "log_every", "eval_people", "keep_ckpts"):
            if getattr(self, k) < 1:
                raise ConfigError(f"{section}.{k} must be >= 1, got {getattr(self, k)}")
        for k in ("exposures", "min_steps"):
            if getattr(self, k) is not None and getattr(self, k) < 1:
                raise ConfigError(f"{section}.{k} must be null or >= 1, got {getattr(self, k)}")
        if self.min_steps is not None and self.exposures is None:
            # min_steps only halves the batch of an exposures plan: alone it would do nothing
            raise ConfigError(
                f"{section}.min_steps={self.min_steps} needs {section}.exposures (it halves the batch "
                f"until the exposures take that many steps); set {section}.min_steps=null"
            )
        for k in ("warmup_steps", "eval_every", "ckpt_every"):
            if getattr(self, k) < 0:
                raise ConfigError(f"{section}.{k} must be >= 0, got {getattr(self, k)}")
        if not 0 <= self.qa_ratio <= 1:
            raise ConfigError(f"{section}.qa_ratio must be in [0, 1], got {self.qa_ratio}")
        if self.precision not in ("auto", "no", "bf16", "fp16"):
            raise ConfigError(f"{section}.precision must be auto, no, bf16 or fp16, got {self.precision!r}")
        if self.wandb not in WANDB_MODES:
            raise ConfigError(f"{section}.wandb must be offline, online or disabled, got {self.wandb!r}")
        if self.lr <= 0 or not 0 <= self.min_lr_ratio <= 1:
            raise ConfigError(
                f"{section}.lr must be > 0 and {section}.min_lr_ratio in [0, 1], "
                f"got {self.lr} and {self.min_lr_ratio}"
            )


# TrainConfig keys a resumed run may change, because they never touch the weights' bytes: the
# preset's name (a label), how often the loss is logged (log_every), what is measured and how often
# (eval_every, eval_people: evaluation runs the model in eval mode under no_grad and draws no random
# numbers), how often the state is saved and how many saves are kept (ckpt_every, keep_ckpts: a run
# resumed from any checkpoint ends with the uninterrupted run's weights) and wandb. Every other key
# changes them: the schedule (steps, lr, warmup_steps, ...), the batches (seed, batch_size, ctx,
# qa_ratio, exposures) or the float rounding (precision, compile, micro_batch_size), so that "same seed,
# same bytes" would no longer hold. The pipeline's stage keys and run names leave the same keys out but
# the name (biolab.pipeline.cache.VOLATILE is built from this set).
LOGGING_KEYS = frozenset(
    {"name", "log_every", "eval_every", "eval_people", "ckpt_every", "keep_ckpts", "wandb"}
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
    """BIO windows, mixed with windows of P_train QA texts (the corpus's QA, or ``qa_texts``, e.g. a
    Part 3.2 task set's items) with probability ``cfg.qa_ratio``."""
    b = corpus.bios
    bio = WindowStream(corpus.bio_ids, b["offsets"], corpus.eos, cfg.ctx, cfg.seed)
    if qa_texts is not None and cfg.qa_ratio <= 0:
        raise ConfigError("mixed training on task items needs train.qa_ratio > 0")
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


def _checkpoints(run_dir: Path) -> list[Path]:
    return sorted((run_dir / "checkpoints").glob("step_*"), key=lambda p: int(p.name.split("_")[1]))


def check_run_dir(run_dir: str | Path, overwrite: bool, prepared: tuple[str, ...] = PREPARED) -> None:
    """A finished run is never silently replaced; an unfinished one resumes; a folder that is not a
    run (nothing but ``prepared`` entries, hidden ones aside) is never written into; an unwritable
    one fails here rather than mid-run."""
    run_dir = check_writable(run_dir)
    if is_done(run_dir) and not overwrite:
        raise ConfigError(f"{run_dir} holds a finished run; pass overwrite=true to train it again")
    if run_dir.is_dir() and not any((run_dir / m).is_file() for m in RUN_MARKERS):
        other = sorted(p.name for p in run_dir.iterdir() if p.name[0] != "." and p.name not in prepared)
        if other:
            raise ConfigError(
                f"out={run_dir} is not empty and holds no training run (no status.json or config.json, "
                f"but {other[0]!r}); use a new out"
            )


def check_wandb_meta(meta: dict | None) -> dict:
    """``wandb_meta`` checked: optional ``name``, ``group`` (str), ``tags`` (list of str) and
    ``config`` (a dict merged into the wandb config)."""
    meta = dict(meta or {})
    for key, value in meta.items():
        if key not in WANDB_META:
            raise ConfigError(f"unknown wandb_meta key {key!r}; valid keys: {', '.join(WANDB_META)}")
        kind, words = WANDB_META[key]
        if not isinstance(value, kind) or (key == "tags" and not all(isinstance(t, str) for t in value)):
            raise ConfigError(f"wandb_meta.{key} must be {words}, got {value!r}")
    return meta


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
    one bio of the person, not a pass: with M entries per person, E exposures are E / M passes), and
    the exposures those whole steps give. BIO windows only: mixed training's QA windows are extra.
    With ``cfg.min_steps`` the batch is halved (while it stays a whole number of micro batches) until
    there are that many steps: the paper's Remark A.2, few exposures need enough optimizer steps."""
    n_bios = corpus.n_bios
    people = len(np.unique(corpus.bios["person_id"]))
    pass_tokens = int(corpus.bios["offsets"][-1]) + n_bios  # each bio + its EOS
    share = 1.0 - cfg.qa_ratio
    if share <= 0:
        raise ConfigError("train.exposures counts BIO windows: it needs train.qa_ratio < 1")
    bio_tokens = pass_tokens / n_bios  # one exposure: one bio and its EOS
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
            "people": people, "entries_per_person": round(n_bios / people, 4),
            "passes": round(got * people / n_bios, 3),
            "tokens_per_exposure": round(bio_tokens, 2)}  # fmt: skip


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
    work, resume = _work_and_resume(accelerator, run_dir, overwrite, record, _train_section(config))
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
    accelerator.register_for_checkpointing(scheduler, _StateBox(batches))

    start_step = 0
    if resume is not None:
        accelerator.load_state(str(resume / "state"))
        start_step = json.loads((resume / CKPT_RECORD).read_text())["step"]
        if main:
            print(f"resuming {run_dir} from step {start_step}")
    if main:  # rows logged after the step we start from (or by an attempt killed before any checkpoint)
        _truncate_metrics(work / "metrics.jsonl", start_step)

    logger = _Logger(run_dir, work, cfg, {**(config or {}), "train": asdict(cfg)}, main, meta)
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
                raise TrainingError(f"non-finite loss {loss_value} at step {step + 1}; {_last_good(work)}")
            grad_norm = float(accelerator.clip_grad_norm_(params, cfg.grad_clip))
            # Every process sees the same reduced loss and synced gradients, so all stop together.
            # With fp16 loss scaling an overflow is routine: the scaler skips that step itself.
            if not math.isfinite(grad_norm) and accelerator.scaler is None:
                raise TrainingError(
                    f"non-finite gradient norm {grad_norm} at step {step + 1} (loss {loss_value:.4f}); "
                    f"{_last_good(work)}"
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
                _save_checkpoint(accelerator, unwrapped, tokenizer, work, done, cfg.keep_ckpts, record)
        _check_finite(unwrapped, cfg.steps, work)  # the final model, on every process
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
        _save_model(unwrapped, tokenizer, work / "model", training_data)
        write_status(work, "done", started, steps=cfg.steps, final=last, params_no_embeddings=n_params)
        if work != run_dir:
            _swap_in(work, run_dir)
    accelerator.wait_for_everyone()
    return last


def _work_and_resume(
    accelerator, run_dir: Path, overwrite: bool, record: dict, section: str
) -> tuple[Path, Path | None]:
    """Where this attempt writes, and the checkpoint it resumes from (None: from step 0). An
    unfinished run resumes from its newest intact checkpoint (newer damaged ones are moved aside, with
    a warning), unless that checkpoint was trained with another config: then the run stops here, before
    anything is written, or, with ``overwrite``, starts over as an overwrite of a finished run does."""
    from accelerate.utils import broadcast_object_list

    done = is_done(run_dir)
    found: list = [([], None)]
    if not done and accelerator.is_main_process:  # hashing a checkpoint once is enough
        found = [intact_checkpoint(run_dir)]
    damaged, resume = broadcast_object_list(found)[0]
    drift = config_drift(resume, record, section) if resume is not None else []
    if drift and not overwrite:
        step = json.loads((resume / CKPT_RECORD).read_text())["step"]
        raise ConfigError(
            f"{run_dir} was trained to step {step} with another config: {', '.join(drift)}; rerun with "
            "that config to resume it, or pass overwrite=true to start over"
        )
    work = _work_dir(accelerator, run_dir, overwrite and (done or bool(drift)))
    if work != run_dir:
        return work, None
    if accelerator.is_main_process:
        for ckpt, why in damaged:
            aside = set_aside(ckpt)
            print(f"warning: checkpoint {ckpt} is damaged ({why}); moved to {aside.name}, resuming from "
                  f"{resume.name if resume else 'step 0'}", file=sys.stderr)  # fmt: skip
    accelerator.wait_for_everyone()
    return work, resume


def _train_section(config: dict | None) -> str:
    """Where the TrainConfig sits in the user's config: a finetune's is nested under ``finetune``."""
    return "finetune.train" if "finetune" in (config or {}) else "train"


def _work_dir(accelerator, run_dir: Path, replace: bool) -> Path:
    """Where this attempt writes: ``run_dir``, or, to ``replace`` it (an overwrite of a finished run, or
    of one trained with another config), the hidden sibling ``.RUN.overwrite`` (cleared first: a killed
    overwrite is not resumed). A sibling, not a subfolder, so that a path saved relative to a folder in
    it still holds once moved into ``run_dir``."""
    here = run_dir.resolve()  # so that out=. has a name and a parent
    work = here.with_name(f".{here.name}.overwrite") if replace else run_dir
    accelerator.wait_for_everyone()  # every process has read the status before anything moves
    if accelerator.is_main_process and replace:
        shutil.rmtree(work, ignore_errors=True)
    accelerator.wait_for_everyone()
    return work


def _swap_in(new: Path, run_dir: Path) -> None:
    """Move a finished replacement's outputs over the old run's. The old status.json goes first and
    the new one comes last, so an interrupted swap leaves a run that is not done, never a done run
    made of two runs' files; the rest of ``run_dir`` (data, corpus, eval, wandb) stays."""
    here = run_dir.resolve()
    trash = here.with_name(f".{here.name}.replaced")
    shutil.rmtree(trash, ignore_errors=True)
    trash.mkdir()
    for name in RUN_OUTPUTS:
        if (run_dir / name).exists():
            os.replace(run_dir / name, trash / name)
    for name in (*RUN_OUTPUTS[1:], RUN_OUTPUTS[0]):
        if (new / name).exists():
            os.replace(new / name, run_dir / name)
    shutil.rmtree(new, ignore_errors=True)
    shutil.rmtree(trash, ignore_errors=True)


class _StateBox:
    """Lets accelerate checkpoint the data stream's position with the optimizer and RNG states."""

    def __init__(self, stream):
        self.stream = stream

    def state_dict(self) -> dict:
        return self.stream.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.stream.load_state_dict(state)


def peak_flops(device: str | torch.device) -> float | None:
    """Dense bf16 FLOP/s of ``device`` for MFU (PEAK_FLOPS), None for a device not listed there."""
    device = torch.device(device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else ""
    return next((v for k, v in PEAK_FLOPS.items() if k in name), None)


def _save_model(model, tokenizer, out: Path, training_data: dict | None = None) -> None:
    """save_pretrained into a temp folder, then rename: a reader never sees half a model. The
    tokenizer's ``model_max_length`` becomes the model's positions (transformers' default is ~1e30);
    an adapter names its base model relative to itself, so the whole root can move."""
    tmp = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(str(tmp))
    positions = getattr(model.config, "max_position_embeddings", None)
    if positions:
        tokenizer.model_max_length = positions
    tokenizer.save_pretrained(str(tmp))
    _relative_base(tmp / "adapter_config.json")
    if training_data is not None:
        write_json(tmp / TRAINING_DATA, training_data)
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)


def _relative_base(adapter_config: Path) -> None:
    """Rewrite a peft adapter's ``base_model_name_or_path`` relative to the adapter folder. The temp
    folder it is written in sits beside the final one, so the relative path holds after the rename."""
    if not adapter_config.is_file():
        return
    conf = json.loads(adapter_config.read_text())
    base = Path(conf.get("base_model_name_or_path") or "")
    if base.is_dir():  # a local folder (it was loaded from this path, relative to the working dir)
        conf["base_model_name_or_path"] = os.path.relpath(base.resolve(), adapter_config.parent.resolve())
        write_json(adapter_config, conf)


def _non_finite(model) -> str | None:
    """The name of the first parameter holding NaN or inf, or None."""
    return next((n for n, p in model.named_parameters() if not torch.isfinite(p).all()), None)


def _check_finite(model, step: int, run_dir: Path) -> None:
    """Refuse to save weights that are not finite (called on every process: they hold the same)."""
    bad = _non_finite(model)
    if bad is not None:
        raise TrainingError(
            f"refusing to save step {step}: {bad} holds non-finite values; {_last_good(run_dir)}"
        )


def _finite_file(path: Path) -> bool:
    from safetensors.torch import load_file

    return all(torch.isfinite(t).all() for t in load_file(str(path)).values())


def _finite_weights(ckpt: Path) -> bool:
    """Whether every safetensors file of a checkpoint (the state it resumes from, the model beside it)
    loads and holds only finite values."""
    from safetensors import SafetensorError

    files = sorted(ckpt.rglob("*.safetensors"))
    try:
        return bool(files) and all(_finite_file(f) for f in files)
    except (SafetensorError, OSError):
        return False


def _last_good(run_dir: Path) -> str:
    """Names the newest checkpoint whose files still match the sha256 recorded when it was saved and
    whose weights are all finite: both checked here, not assumed."""
    for ckpt in reversed(_checkpoints(run_dir)):
        if checkpoint_damage(ckpt) is None and _finite_weights(ckpt):
            hashed = "sha256" in json.loads((ckpt / CKPT_RECORD).read_text())
            return f"the last good checkpoint is {ckpt}" + ("" if hashed else " (no recorded sha256)")
    return "the last good checkpoint is none"


def _file_hashes(ckpt: Path) -> dict[str, str]:
    """sha256 of every file of a checkpoint folder but its record, by path inside it."""
    files = (p for p in sorted(ckpt.rglob("*")) if p.is_file() and p.name != CKPT_RECORD)
    return {p.relative_to(ckpt).as_posix(): file_sha256(p) for p in files}


def checkpoint_damage(ckpt: str | Path) -> str | None:
    """Why a checkpoint cannot be resumed from (a file missing or changed since it was saved, its
    record unreadable), or None when it is intact."""
    ckpt = Path(ckpt)
    try:
        record = json.loads((ckpt / CKPT_RECORD).read_text())
        int(record["step"])
    except (OSError, ValueError, KeyError, TypeError):
        return f"{CKPT_RECORD} is missing or unreadable"
    hashes = record.get("sha256")
    if hashes is None:
        # Saved by code that recorded no hashes: nothing tells flipped bytes from trained ones, so it is
        # accepted as long as its weights load (a truncated file does not) and are finite.
        if not _finite_weights(ckpt):
            return "no recorded sha256, and its weights fail to load or are not finite"
        return None
    for name, digest in hashes.items():
        path = ckpt / name
        if not path.is_file():
            return f"{name} is missing"
        if file_sha256(path) != digest:
            return f"{name} does not match its recorded sha256"
    return None


def intact_checkpoint(run_dir: str | Path) -> tuple[list[tuple[Path, str]], Path | None]:
    """([(damaged checkpoint, why)] newer than the newest intact one, the newest intact one or None).
    Older checkpoints are not read: the one resumed from is all that matters."""
    damaged = []
    for ckpt in reversed(_checkpoints(Path(run_dir))):
        why = checkpoint_damage(ckpt)
        if why is None:
            return damaged, ckpt
        damaged.append((ckpt, why))
    return damaged, None


def set_aside(ckpt: Path) -> Path:
    """Move a damaged checkpoint out of the resume order, kept for a look: ``checkpoints/damaged-step_N``
    (outside the ``step_*`` names, so neither resumed from nor pruned). An earlier damaged copy of the
    same step goes."""
    aside = ckpt.with_name(f"damaged-{ckpt.name}")
    shutil.rmtree(aside, ignore_errors=True)
    os.replace(ckpt, aside)
    return aside


def training_record(cfg: TrainConfig, config: dict | None, training_data: dict | None, run_dir: Path) -> dict:
    """What shapes the weights a run trains, saved with each checkpoint and compared on resume: the
    train keys but LOGGING_KEYS, the rest of the run's config (model; exposure plan; a finetune's keys
    and base model) and the training data's identity. As JSON reads it back."""
    record = {k: v for k, v in (config or {}).items()}
    if "pretrained" in record:  # relative to the run: a root moved as a whole resumes
        record["pretrained"] = os.path.relpath(Path(record["pretrained"]).resolve(), run_dir.resolve())
    record["train"] = {k: v for k, v in asdict(cfg).items() if k not in LOGGING_KEYS}
    if training_data is not None:
        files = json.dumps(training_data.get("sha256"), sort_keys=True)
        record["training_data"] = hashlib.sha256(files.encode()).hexdigest()
    return json.loads(json.dumps(record))


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        elif k != "name":  # a preset's name is a label: the values under it are compared
            out[f"{prefix}{k}"] = v
    return out


def config_drift(ckpt: Path, record: dict, section: str = "train", shown: int = 6) -> list[str]:
    """``key=old (now new)`` for each training-shaping key whose value differs from the one ``ckpt``
    was trained with; [] for a checkpoint that records none (saved by older code: accepted, since the
    run's config.json was rewritten by every start and may describe a later attempt, not this one).
    ``section`` names the train keys as the user wrote them (``finetune.train`` for a finetune)."""
    then = json.loads((ckpt / CKPT_RECORD).read_text()).get("config")
    if then is None:
        return []
    old, new = _flat(then), _flat(record)
    missing = "unset"

    def name(key: str) -> str:
        return section + key[len("train") :] if key.startswith("train.") else key

    def show(v) -> str:
        text = json.dumps(v)
        return text if len(text) <= 40 else text[:12] + "..."

    keys = sorted(k for k in old.keys() | new.keys() if old.get(k, missing) != new.get(k, missing))
    diffs = [f"{name(k)}={show(old.get(k, missing))} (now {show(new.get(k, missing))})" for k in keys]
    return diffs[:shown] + ([f"{len(diffs) - shown} more"] if len(diffs) > shown else [])


def _save_checkpoint(
    accelerator, model, tokenizer, run_dir: Path, step: int, keep: int, record: dict | None = None
) -> None:
    _check_finite(model, step, run_dir)
    final = run_dir / "checkpoints" / f"step_{step:07d}"
    tmp = final.with_name(f".{final.name}.tmp")
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp / "state"))  # optimizer, scheduler, RNG, data position; every rank
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        _save_model(model, tokenizer, tmp / "model")
        # last, over every file the ranks wrote: a resume can tell this checkpoint from a damaged one
        write_json(tmp / CKPT_RECORD, {"step": step, "config": record, "sha256": _file_hashes(tmp)})
        tmp.rename(final)
        for old in _checkpoints(run_dir)[:-keep]:
            shutil.rmtree(old)
    accelerator.wait_for_everyone()


def _truncate_metrics(path: Path, step: int) -> None:
    """Drop rows logged after the checkpoint we resume from: they will be logged again."""
    if path.is_file():
        rows = [r for r in path.read_text().splitlines() if json.loads(r)["step"] <= step]
        path.write_text("".join(r + "\n" for r in rows))


def _finite_or_none(row: dict) -> dict:
    """NaN and inf become None (JSON null): metrics.jsonl stays strict JSON."""
    return {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in row.items()}


def _wandb_mode(mode: str) -> str:
    """WANDB_MODE=disabled in the environment turns wandb off whatever the config says (wandb itself
    lets an explicit mode win); the test suite sets it so that no test logs."""
    return "disabled" if os.environ.get("WANDB_MODE") == "disabled" else mode


def _wandb_init(run_dir: Path, mode: str, meta: dict, config: dict | None = None):
    import wandb

    # Inside the pipeline's stage log: no run history printed at the end of every run (the log keeps
    # where the run is saved), and no copy of the console in the run's files.
    settings = wandb.Settings(quiet=True, console="off") if output_captured() else None
    return wandb.init(
        project="biolab", dir=str(run_dir), mode=mode, name=meta.get("name", run_dir.name),
        group=meta.get("group"), tags=meta.get("tags"), config=config, resume="allow",
        id=hashlib.sha1(str(run_dir.resolve()).encode()).hexdigest()[:12],  # the same run on resume
        settings=settings,
    )  # fmt: skip


def log_summary(run_dir: str | Path, mode: str, wandb_meta: dict | None, values: dict) -> None:
    """Set ``values`` (e.g. exact match per attribute and split, after evaluation) in the summary of
    ``run_dir``'s wandb run, reopened by its id; nothing when ``mode`` is disabled."""
    if mode not in WANDB_MODES:
        raise ConfigError(f"wandb mode must be offline, online or disabled, got {mode!r}")
    meta = check_wandb_meta(wandb_meta)
    if _wandb_mode(mode) == "disabled":
        return
    run = _wandb_init(Path(run_dir), mode, meta)
    try:
        run.summary.update(values)
    finally:
        run.finish()


class _Logger:
    """metrics.jsonl (always, in ``work``) and wandb (offline unless asked; never in tests), named
    after ``run_dir`` and logging under it."""

    def __init__(self, run_dir: Path, work: Path, cfg: TrainConfig, config: dict, main: bool, meta: dict):
        self.main, self.path, self.run = main, work / "metrics.jsonl", None
        mode = _wandb_mode(cfg.wandb)
        if main and mode != "disabled":
            self.run = _wandb_init(run_dir, mode, meta, {**config, **meta.get("config", {})})

    def log(self, row: dict) -> None:
        if not self.main:
            return
        row = _finite_or_none(row)
        with open(self.path, "a") as f:
            f.write(json.dumps(row, allow_nan=False) + "\n")
        if self.run is not None:
            self.run.log({k: v for k, v in row.items() if k != "step" and v is not None}, step=row["step"])

    def close(self) -> None:
        if self.run is not None:
            self.run.finish()
            self.run = None
