"""What a training run reports as it goes: metrics.jsonl (strict JSON), wandb (offline by default,
reopened by id on resume; off in tests), and the peak FLOP/s that MFU is measured against."""

from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path

import torch

from biolab.console import output_captured
from biolab.errors import ConfigError
from biolab.train.config import WANDB_MODES, TrainConfig

PEAK_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12}  # dense bf16, for MFU


WANDB_META = {"name": (str, "a str"), "group": (str, "a str"), "tags": (list, "a list of str"),
              "config": (dict, "a dict")}  # fmt: skip


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


def peak_flops(device: str | torch.device) -> float | None:
    """Dense bf16 FLOP/s of ``device`` for MFU (PEAK_FLOPS), None for a device not listed there."""
    device = torch.device(device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else ""
    return next((v for k, v in PEAK_FLOPS.items() if k in name), None)


def _finite_or_none(row: dict) -> dict:
    """NaN and inf become None (JSON null): metrics.jsonl stays strict JSON."""
    return {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in row.items()}


def wandb_mode(mode: str) -> str:
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
    if wandb_mode(mode) == "disabled":
        return
    run = _wandb_init(Path(run_dir), mode, meta)
    try:
        run.summary.update(values)
    finally:
        run.finish()


class Logger:
    """metrics.jsonl (always, in ``work``) and wandb (offline unless asked; never in tests), named
    after ``run_dir`` and logging under it."""

    def __init__(self, run_dir: Path, work: Path, cfg: TrainConfig, config: dict, main: bool, meta: dict):
        self.main, self.path, self.run = main, work / "metrics.jsonl", None
        mode = wandb_mode(cfg.wandb)
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
