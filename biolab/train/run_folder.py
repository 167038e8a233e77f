"""A training run's folder through its life: checked before any work (never somebody else's
folder, never a finished run unless overwritten), resumed from its newest intact checkpoint with the
same config, an overwrite trained in a hidden sibling and swapped in once done, checkpoints saved
atomically with their files' sha256 and finite weights only, the final model beside them."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
from dataclasses import MISSING, asdict, fields
from pathlib import Path

import torch

from biolab.errors import ConfigError
from biolab.io import check_writable, file_sha256, write_json
from biolab.model import TRAINING_DATA, ModelConfig
from biolab.status import is_done
from biolab.train.config import LOGGING_KEYS, TrainConfig, TrainingError

RUN_MARKERS = ("status.json", "config.json")  # a folder holding either is a training run


# What scripts/pretrain.py and finetune.py put in the run folder before training starts.
PREPARED = ("data", "corpus")


# What an overwrite replaces (status.json first); the rest of the folder (data, corpus, eval, wandb) stays.
RUN_OUTPUTS = ("status.json", "config.json", "metrics.jsonl", "checkpoints", "model")


CKPT_RECORD = "trainer.json"  # a checkpoint's step, training-shaping config and files' sha256


def list_checkpoints(run_dir: Path) -> list[Path]:
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


def work_and_resume(
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


def train_section(config: dict | None) -> str:
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


def swap_in(new: Path, run_dir: Path) -> None:
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


class StateBox:
    """Lets accelerate checkpoint the data stream's position with the optimizer and RNG states."""

    def __init__(self, stream):
        self.stream = stream

    def state_dict(self) -> dict:
        return self.stream.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.stream.load_state_dict(state)


def save_model(model, tokenizer, out: Path, training_data: dict | None = None) -> None:
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


def check_finite(model, step: int, run_dir: Path) -> None:
    """Refuse to save weights that are not finite (called on every process: they hold the same)."""
    bad = _non_finite(model)
    if bad is not None:
        raise TrainingError(
            f"refusing to save step {step}: {bad} holds non-finite values; {last_good(run_dir)}"
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


def last_good(run_dir: Path) -> str:
    """Names the newest checkpoint whose files still match the sha256 recorded when it was saved and
    whose weights are all finite: both checked here, not assumed."""
    for ckpt in reversed(list_checkpoints(run_dir)):
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
    for ckpt in reversed(list_checkpoints(Path(run_dir))):
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
    later = added_later_defaults()

    def name(key: str) -> str:
        return section + key[len("train") :] if key.startswith("train.") else key

    def show(v) -> str:
        text = json.dumps(v)
        return text if len(text) <= 40 else text[:12] + "..."

    # a key the checkpoint's code did not have yet, at its default, trains as before (model.n_experts=0)
    keys = sorted(k for k in old.keys() | new.keys() if old.get(k, missing) != new.get(k, missing)
                  and not (k not in old and k in later and new[k] == later[k]))  # fmt: skip
    diffs = [f"{name(k)}={show(old.get(k, missing))} (now {show(new.get(k, missing))})" for k in keys]
    return diffs[:shown] + ([f"{len(diffs) - shown} more"] if len(diffs) > shown else [])


def added_later_defaults() -> dict:
    """``model.<key>`` and ``train.<key>`` -> the field's default, for every field of ModelConfig and
    TrainConfig: what a checkpoint saved before the field existed was trained with."""
    out = {}
    for section, cls in (("model", ModelConfig), ("train", TrainConfig)):
        out.update({f"{section}.{f.name}": f.default for f in fields(cls) if f.default is not MISSING})
    return out


def save_checkpoint(
    accelerator, model, tokenizer, run_dir: Path, step: int, keep: int, record: dict | None = None
) -> None:
    check_finite(model, step, run_dir)
    final = run_dir / "checkpoints" / f"step_{step:07d}"
    tmp = final.with_name(f".{final.name}.tmp")
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp / "state"))  # optimizer, scheduler, RNG, data position; every rank
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        save_model(model, tokenizer, tmp / "model")
        # last, over every file the ranks wrote: a resume can tell this checkpoint from a damaged one
        write_json(tmp / CKPT_RECORD, {"step": step, "config": record, "sha256": _file_hashes(tmp)})
        tmp.rename(final)
        for old in list_checkpoints(run_dir)[:-keep]:
            shutil.rmtree(old)
    accelerator.wait_for_everyone()


def truncate_metrics(path: Path, step: int) -> None:
    """Drop rows logged after the checkpoint we resume from: they will be logged again."""
    if path.is_file():
        rows = [r for r in path.read_text().splitlines() if json.loads(r)["step"] <= step]
        path.write_text("".join(r + "\n" for r in rows))
