"""The training loop (``train``) and BIO / mixed BIO+QA pretraining on it (``pretrain``); QA
finetuning (``biolab.train.finetune``) runs in the same loop.

One loop serves a 1M-parameter model on a CPU and GPT-2 124M on GPUs (``accelerate launch`` for
several): AdamW, linear warmup then cosine to ``min_lr_ratio``, gradient accumulation to the global
batch, clipping, bf16 autocast on GPU, optional ``torch.compile``, atomic checkpoints that resume
to the same weights, metrics.jsonl + wandb (offline by default).
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from biolab.config import from_dict
from biolab.data.packing import STREAM_QA, MixedStream, WindowStream
from biolab.data.tokens import Corpus, TextSet
from biolab.errors import BiolabError, ConfigError
from biolab.io import write_json
from biolab.model import ModelConfig, build_model, count_parameters, flops_per_token
from biolab.status import read_status, write_status
from biolab.train.metrics import bio_first_token_accuracy, eval_bios

PEAK_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12}  # dense bf16, for MFU


class TrainingError(BiolabError):
    """Training stopped (e.g. a non-finite loss); the last good checkpoint is kept."""


@dataclass(frozen=True)
class TrainConfig:
    name: str = "tiny"
    steps: int = 1000
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
    def from_dict(cls, d: dict) -> TrainConfig:
        return from_dict(cls, d, "train")

    def validate(self) -> None:
        for k in ("steps", "batch_size", "ctx", "log_every", "eval_people", "keep_ckpts"):
            if getattr(self, k) < 1:
                raise ConfigError(f"train.{k} must be >= 1, got {getattr(self, k)}")
        for k in ("warmup_steps", "eval_every", "ckpt_every"):
            if getattr(self, k) < 0:
                raise ConfigError(f"train.{k} must be >= 0, got {getattr(self, k)}")
        if not 0 <= self.qa_ratio <= 1:
            raise ConfigError(f"train.qa_ratio must be in [0, 1], got {self.qa_ratio}")
        if self.precision not in ("auto", "no", "bf16", "fp16"):
            raise ConfigError(f"train.precision must be auto, no, bf16 or fp16, got {self.precision!r}")
        if self.wandb not in ("offline", "online", "disabled"):
            raise ConfigError(f"train.wandb must be offline, online or disabled, got {self.wandb!r}")
        if self.lr <= 0 or not 0 <= self.min_lr_ratio <= 1:
            raise ConfigError("train.lr must be > 0 and train.min_lr_ratio in [0, 1]")


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


def mixed_precision(cfg: TrainConfig) -> str:
    """accelerate's mixed_precision for ``cfg.precision`` on this machine."""
    if cfg.precision == "auto":
        return "bf16" if torch.cuda.is_available() else "no"
    return cfg.precision


def _checkpoints(run_dir: Path) -> list[Path]:
    return sorted((run_dir / "checkpoints").glob("step_*"), key=lambda p: int(p.name.split("_")[1]))


def check_run_dir(run_dir: Path, overwrite: bool) -> None:
    """A finished run is never silently replaced; an unfinished one resumes."""
    status = read_status(run_dir)
    if status and status["status"] == "done" and not overwrite:
        raise ConfigError(f"{run_dir} holds a finished run; pass overwrite=true to train it again")


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
) -> dict:
    """BIO (or mixed BIO+QA) pretraining of a fresh ``model_cfg`` model into ``run_dir``; mixed
    training takes its QA windows from ``qa_texts`` when given (a Part 3.2 task set's items)."""
    cfg.validate()
    if cfg.ctx > model_cfg.max_positions:
        raise ConfigError(f"train.ctx={cfg.ctx} exceeds model.max_positions={model_cfg.max_positions}")
    stream = make_stream(corpus, cfg, qa_texts)  # before anything is written: a bad mix fails here
    sample = eval_bios(corpus, cfg.eval_people)

    def evaluate(model) -> dict:
        row = {}
        for split, idx in sample.items():
            acc = bio_first_token_accuracy(model, corpus, idx)
            row.update({f"bio_first_token/{split}/{a}": round(v, 4) for a, v in acc.items()})
        return row

    def make_model():
        return build_model(model_cfg, corpus.vocab_size, corpus.eos, corpus.pad, corpus.eos)

    return train(
        run_dir, make_model, corpus.tokenizer(), stream, cfg, evaluate=evaluate,
        config={"model": asdict(model_cfg)}, flops_cfg=model_cfg, accelerator=accelerator,
        overwrite=overwrite, on_step=on_step, progress=progress,
    )  # fmt: skip


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
) -> dict:
    """The one training loop. ``batches.next_batch(n)`` gives numpy ``input_ids`` (and optionally
    ``labels``, ``attention_mask``) and has ``state_dict``; ``make_model()`` is called after seeding,
    and only its trainable parameters are optimised. Resumes from ``run_dir``'s last checkpoint;
    returns the last logged metrics; ``run_dir/model`` gets ``save_pretrained`` (a peft model saves
    its adapter)."""
    from accelerate import Accelerator
    from transformers import get_cosine_with_min_lr_schedule_with_warmup

    run_dir = Path(run_dir)
    cfg.validate()
    accelerator = accelerator or Accelerator(mixed_precision=mixed_precision(cfg))
    per_process, n_micro = micro_batches(cfg, accelerator.num_processes)
    check_run_dir(run_dir, overwrite)
    if overwrite and (read_status(run_dir) or {}).get("status") == "done":
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            for sub in ("checkpoints", "model", "metrics.jsonl", "status.json"):
                p = run_dir / sub
                shutil.rmtree(p) if p.is_dir() else p.unlink(missing_ok=True)
        accelerator.wait_for_everyone()
    started = time.time()
    main = accelerator.is_main_process
    if main:
        run_dir.mkdir(parents=True, exist_ok=True)
        write_json(run_dir / "config.json", {**(config or {}), "train": asdict(cfg)})
        write_status(run_dir, "running", started)

    torch.manual_seed(cfg.seed)  # the same initial weights on every process
    model = make_model()
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
    ckpts = _checkpoints(run_dir)
    if ckpts:
        accelerator.load_state(str(ckpts[-1] / "state"))
        start_step = json.loads((ckpts[-1] / "trainer.json").read_text())["step"]
        if main:
            _truncate_metrics(run_dir / "metrics.jsonl", start_step)
            print(f"resuming {run_dir} from step {start_step}")

    logger = _Logger(run_dir, cfg, config or {}, main)
    unwrapped = accelerator.unwrap_model(model)
    peak = next((v for k, v in PEAK_FLOPS.items() if k in accelerator.device.type + _gpu_name()), None)
    flops_tok = flops_per_token(flops_cfg, n_params, cfg.ctx) if flops_cfg is not None else None
    rank, micro = accelerator.process_index, per_process // n_micro
    bar = tqdm(total=cfg.steps, initial=start_step, desc=run_dir.name, disable=not (main and progress))
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
                    with accelerator.autocast():
                        loss = model(**part).loss / n_micro
                    accelerator.backward(loss)
                loss_sum += loss.detach()
            loss_value = accelerator.reduce(loss_sum, reduction="mean").item()
            if not math.isfinite(loss_value):
                good = _checkpoints(run_dir)
                raise TrainingError(
                    f"non-finite loss {loss_value} at step {step + 1}; "
                    f"the last good checkpoint is {good[-1] if good else 'none'}"
                )
            grad_norm = accelerator.clip_grad_norm_(params, cfg.grad_clip)
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
                        "grad_norm": round(float(grad_norm), 4), "tokens_per_s": round(tok_s, 1)}  # fmt: skip
                if peak and flops_tok:
                    last["mfu"] = round(tok_s * flops_tok / (peak * accelerator.num_processes), 4)
                logger.log(last)
                bar.set_postfix(loss=f"{loss_value:.3f}", tok_s=f"{tok_s:.0f}")
            if evaluate and cfg.eval_every and (done % cfg.eval_every == 0 or done == cfg.steps) and main:
                row = {"step": done, **evaluate(unwrapped)}
                logger.log(row)
                last.update(row)
            if cfg.ckpt_every and done % cfg.ckpt_every == 0 and done < cfg.steps:
                _save_checkpoint(accelerator, unwrapped, tokenizer, run_dir, done, cfg.keep_ckpts)
    except BaseException as err:
        bar.close()
        logger.close()
        if main:
            write_status(run_dir, "failed", started, error=f"{type(err).__name__}: {err}")
        raise
    bar.close()
    accelerator.wait_for_everyone()
    if main:
        _save_model(unwrapped, tokenizer, run_dir / "model")
        write_status(run_dir, "done", started, steps=cfg.steps, final=last, params_no_embeddings=n_params)
    logger.close()
    accelerator.wait_for_everyone()
    return last


class _StateBox:
    """Lets accelerate checkpoint the data stream's position with the optimizer and RNG states."""

    def __init__(self, stream):
        self.stream = stream

    def state_dict(self) -> dict:
        return self.stream.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.stream.load_state_dict(state)


def _gpu_name() -> str:
    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else ""


def _save_model(model, tokenizer, out: Path) -> None:
    """save_pretrained into a temp folder, then rename: a reader never sees half a model."""
    tmp = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(str(tmp))
    tokenizer.save_pretrained(str(tmp))
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)


def _save_checkpoint(accelerator, model, tokenizer, run_dir: Path, step: int, keep: int) -> None:
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
        write_json(tmp / "trainer.json", {"step": step})
        tmp.rename(final)
        for old in _checkpoints(run_dir)[:-keep]:
            shutil.rmtree(old)
    accelerator.wait_for_everyone()


def _truncate_metrics(path: Path, step: int) -> None:
    """Drop rows logged after the checkpoint we resume from: they will be logged again."""
    if path.is_file():
        rows = [r for r in path.read_text().splitlines() if json.loads(r)["step"] <= step]
        path.write_text("".join(r + "\n" for r in rows))


class _Logger:
    """metrics.jsonl (always) and wandb (offline unless asked; never in tests)."""

    def __init__(self, run_dir: Path, cfg: TrainConfig, config: dict, main: bool):
        self.main, self.path, self.run = main, run_dir / "metrics.jsonl", None
        if main and cfg.wandb != "disabled":
            import wandb

            self.run = wandb.init(
                project="biolab", dir=str(run_dir), mode=cfg.wandb, name=run_dir.name,
                config={**config, "train": asdict(cfg)}, resume="allow",
                id=hashlib.sha1(str(run_dir.resolve()).encode()).hexdigest()[:12],  # same id on resume
            )  # fmt: skip

    def log(self, row: dict) -> None:
        if not self.main:
            return
        with open(self.path, "a") as f:
            f.write(json.dumps(row) + "\n")
        if self.run is not None:
            self.run.log({k: v for k, v in row.items() if k != "step"}, step=row["step"])

    def close(self) -> None:
        if self.run is not None:
            self.run.finish()
            self.run = None
