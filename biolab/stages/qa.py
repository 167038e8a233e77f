"""The QA stages: finetune a pretrained model on P_train's QA then evaluate it (``finetune``), or
evaluate the pretrained model as it is (``evaluate``: mixed training); both write
``eval/metrics.json``, which ``eval_metrics`` reads back for the report."""

from __future__ import annotations

import json
from pathlib import Path

from biolab.data.people import ATTRIBUTES
from biolab.data.tokens import Corpus
from biolab.device import pick_device
from biolab.eval.qa import EvalConfig, evaluate_qa
from biolab.model import load_model
from biolab.stages.kind import Kind, wandb_meta
from biolab.stages.manifest import Run, StageMissing, stage_json
from biolab.stages.rows import QA_ATTRIBUTES, Reader, Readout, flag, paper_lookup, pct, row, stats
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


QA_KEYS = {"exact_match": "qa_exact_match", "first_token": "qa_first_token", "majority": "qa_majority"}
# our exact match / majority on P_test is the paper's qa_test_acc (its baseline row for the majority)
QA_PAPER = {"qa_exact_match": "qa_test_acc", "qa_majority": "qa_test_acc"}


def qa_rows(run: Run, strict: bool = False, notes: list | None = None) -> list[dict]:
    """QA exact match, first-token accuracy and majority per split and attribute (percent).

    P_test exact match is what the paper reports; when it cannot be read its rows stay, flagged."""
    source, method = run.paper.get("qa"), run.paper.get("qa_method")

    def qa_row(split, metric, attribute, value=None, note="", n=None):
        pv = None
        if split == "test" and metric in QA_PAPER:
            data = "majority_baseline" if metric == "qa_majority" else run.data
            pv = paper_lookup(
                run, source, data, QA_PAPER[metric], attribute, None, method if data == run.data else None
            )
        return row(run, split=split, attribute=attribute, metric=metric, value=value, paper_value=pv,
                    paper_source=source if pv is not None else "", note=note, **stats(value, n))  # fmt: skip

    def missing(note):
        flag(note, strict, notes)
        return [qa_row("test", "qa_exact_match", a, note=note) for a in QA_ATTRIBUTES]

    try:
        splits = eval_metrics(run)["splits"]
    except StageMissing as err:
        return missing(str(err))
    if not isinstance(splits.get("test"), dict):
        return missing(f"{run.name}: the eval's metrics.json has no test split")
    rows = []
    for split in ("train", "test"):  # P_train is optional (an eval of P_test only)
        counts = qa_counts((splits.get(split) or {}).get("questions"))
        for key, metric in QA_KEYS.items():
            block = (splits.get(split) or {}).get(key)
            if split != "test" and not isinstance(block, dict):
                continue
            for a in QA_ATTRIBUTES:
                value = pct(block.get(a)) if isinstance(block, dict) else None
                note = (
                    ""
                    if value is not None
                    else f"{run.name}: the eval's metrics.json has no {split} {key} {a}"
                )
                if note:
                    flag(note, strict, notes)
                rows.append(qa_row(split, metric, a, value, note, counts.get(a)))
    return rows


def qa_counts(questions) -> dict[str, int]:
    """Attribute -> questions it is over: each person has one question per attribute, so people per
    attribute, and every question for the mean (an uneven total has no per-attribute count)."""
    if not isinstance(questions, int) or questions <= 0:
        return {}
    per = questions // len(ATTRIBUTES) if questions % len(ATTRIBUTES) == 0 else None
    return {**dict.fromkeys(ATTRIBUTES, per), "mean": questions}


def read_qa(run: Run, strict: bool, notes: list) -> Readout:
    return Readout(rows=qa_rows(run, strict, notes))


QA_READER = Reader("eval", read_qa)
