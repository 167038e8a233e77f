"""The QA stages: finetune a pretrained model on P_train's QA then evaluate it (``finetune``), or
evaluate the pretrained model as it is (``evaluate``: mixed training); both write
``eval/metrics.json``, which ``eval_metrics`` reads back for the report."""

from __future__ import annotations

import json
from pathlib import Path

from biolab.data.tokens import Corpus
from biolab.device import pick_device
from biolab.eval.qa import EvalConfig, evaluate_qa
from biolab.model import load_model
from biolab.stages.kind import Kind, wandb_meta
from biolab.stages.manifest import Run, StageMissing, stage_json
from biolab.train.finetune import finetune, finetune_configs
from biolab.train.log import log_summary


def evaluate_model(cfg: dict, data: Path, model_dir: Path, out: Path, progress: bool) -> dict:
    device = pick_device()
    model, tokenizer = load_model(model_dir, device=device)
    e = EvalConfig.from_dict(cfg["eval"])
    return evaluate_qa(model, tokenizer, data, Path(out) / "eval", max_people=e.max_people,
                       batch_size=e.batch_size_on(device), num_beams=e.num_beams,
                       progress=progress)  # fmt: skip


def exact_match_summary(metrics: dict) -> dict:
    """``exact_match/<split>/<attribute>`` of an evaluation, for the wandb run's summary."""
    return {f"exact_match/{split}/{a}": v for split, m in metrics["splits"].items()
            for a, v in m["exact_match"].items()}  # fmt: skip


def build_evaluate(cfg: dict, inputs: dict, out: Path, progress: bool, context: dict) -> None:
    metrics = evaluate_model(cfg, inputs["data"], Path(inputs["pretrain"]) / "model", out, progress)
    # mixed training: the exact match belongs to the pretraining run, which is the model
    train = json.loads((Path(inputs["pretrain"]) / "config.json").read_text())["train"]
    meta = wandb_meta("pretrain", {}, Path(inputs["pretrain"]), context)
    log_summary(inputs["pretrain"], train["wandb"], meta, exact_match_summary(metrics))


def check_evaluate(cfg: dict) -> None:
    EvalConfig.from_dict(cfg["eval"])


def build_finetune(cfg: dict, inputs: dict, out: Path, progress: bool, context: dict) -> None:
    ft, tr = finetune_configs(cfg["finetune"])
    meta = wandb_meta("finetune", inputs, out, context)
    finetune(out, Path(inputs["pretrain"]) / "model", Corpus(inputs["corpus"]), ft, tr, progress=progress,
             wandb_meta=meta)  # fmt: skip
    metrics = evaluate_model(cfg, inputs["data"], Path(out) / "model", out, progress)
    log_summary(out, tr.wandb, meta, exact_match_summary(metrics))


def check_finetune(cfg: dict) -> None:
    """The finetune keys and their nested train section (also a manipulation task's finetune)."""
    finetune_configs(cfg["finetune"])
    if "eval" in cfg:
        EvalConfig.from_dict(cfg["eval"])


def eval_metrics(run: Run) -> dict:
    """The QA eval's ``metrics.json`` ({"splits": {"train": {...}, "test": {...}}})."""
    path, metrics = stage_json(run, "eval", "eval/metrics.json")
    if not isinstance(metrics.get("splits"), dict):
        raise StageMissing(f"{run.name}: {path} has no 'splits'")
    return metrics


FINETUNE = Kind("finetune", ("model", "eval/metrics.json"), build_finetune, check_finetune, resumable=True,
                runs_model=True)  # fmt: skip
EVALUATE = Kind("evaluate", ("eval/metrics.json",), build_evaluate, check_evaluate, runs_model=True)
