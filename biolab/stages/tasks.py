"""The manipulation stages (Part 3.2): a task set written from the dataset and tokenized, a model
trained on its P_train items (finetuned from the pretrained model, or pretrained mixed with them), and
its evaluation, read back by ``task_metrics``."""

from __future__ import annotations

from pathlib import Path

from biolab.data.manipulation import validate_task, write_task_set
from biolab.data.task_tokens import load_task_texts, tokenize_task_set
from biolab.data.tokens import Corpus
from biolab.device import pick_device
from biolab.errors import ConfigError
from biolab.eval.qa import EvalConfig
from biolab.eval.tasks import evaluate_task_set
from biolab.model import ModelConfig, load_model
from biolab.stages.kind import Kind, wandb_meta
from biolab.stages.manifest import (
    TASK_RUNS,
    Run,
    StageMissing,
    check_stage,
    check_upstream,
    need_file,
    read_json,
)
from biolab.stages.pretrain import check_training
from biolab.stages.qa import check_finetune
from biolab.stages.rows import Reader, Readout, flag, pct, row, statement_value, stats
from biolab.train.config import TrainConfig
from biolab.train.finetune import finetune, finetune_configs
from biolab.train.pretrain import pretrain


def build_tasks(cfg: dict, inputs: dict, out: Path, progress: bool, context: dict) -> None:
    t = cfg["task"]
    write_task_set(inputs["data"], t["task"], out, n_train=t["n_train"], n_test=t["n_test"],
                   seed=t["seed"], hint_prob=t["hint_prob"])  # fmt: skip
    tokenize_task_set(out, Corpus(inputs["corpus"]).tokenizer())


def check_tasks(cfg: dict) -> None:
    t = cfg["task"]
    validate_task(t["task"], t["n_train"], t["n_test"], t["hint_prob"])


def build_task_finetune(cfg: dict, inputs: dict, out: Path, progress: bool, context: dict) -> None:
    ft, tr = finetune_configs(cfg["finetune"])
    meta = wandb_meta("task_finetune", inputs, out, context)
    finetune(out, Path(inputs["pretrain"]) / "model", Corpus(inputs["corpus"]), ft, tr, progress=progress,
             texts=load_task_texts(inputs["tasks"]), wandb_meta=meta)  # fmt: skip


def build_task_mixed(cfg: dict, inputs: dict, out: Path, progress: bool, context: dict) -> None:
    texts, meta = load_task_texts(inputs["tasks"]), wandb_meta("task_mixed", inputs, out, context)
    model, train = ModelConfig.from_dict(cfg["model"]), TrainConfig.from_dict(cfg["train"])
    pretrain(out, Corpus(inputs["corpus"]), model, train, progress=progress, qa_texts=texts, wandb_meta=meta)


def build_task_eval(cfg: dict, inputs: dict, out: Path, progress: bool, context: dict) -> None:
    device = pick_device()
    model, tokenizer = load_model(Path(inputs["model"]) / "model", device=device)
    e = cfg["eval"]
    evaluate_task_set(
        model, tokenizer, inputs["tasks"], Path(out) / "eval", max_items=e["max_items"],
        batch_size=task_eval_config(cfg).batch_size_on(device), num_beams=e["num_beams"], progress=progress,
    )  # fmt: skip


def task_eval_config(cfg: dict) -> EvalConfig:
    """A task evaluation's generation keys (max_items aside) as an EvalConfig."""
    return EvalConfig.from_dict({k: v for k, v in cfg["eval"].items() if k != "max_items"})


def check_task_eval(cfg: dict) -> None:
    e = cfg["eval"]
    task_eval_config(cfg)
    if e["max_items"] is not None and (not isinstance(e["max_items"], int) or e["max_items"] < 1):
        raise ConfigError(f"max_items must be null or an int >= 1, got {e['max_items']!r}")


def task_metrics(run: Run, label: str) -> dict:
    """A manipulation task run's ``eval/metrics.json``, once its task set, training and eval are done."""
    check_upstream(run)
    stages = run.task_runs().get(label, {}).get("stages", {})
    for part in ("tasks", "train"):
        check_stage(run, stages.get(part), f"task {label} {part}")
    folder = check_stage(run, stages.get("eval"), f"task {label} eval")
    data = read_json(run, need_file(run, folder, "eval/metrics.json", f"task {label} eval"), "task eval")
    if not isinstance(data.get("splits"), dict):
        raise StageMissing(f"{run.name}: {folder}/eval/metrics.json has no 'splits'")
    return data


TASKS = Kind("tasks", ("meta.json", "items.jsonl", "items.bin", "items.npz", "items.json"), build_tasks,
             check_tasks)  # fmt: skip
TASK_FINETUNE = Kind("task_finetune", ("model",), build_task_finetune, check_finetune, resumable=True,
                     runs_model=True)  # fmt: skip
TASK_MIXED = Kind("task_mixed", ("model",), build_task_mixed, check_training, resumable=True, runs_model=True)
TASK_EVAL = Kind("task_eval", ("eval/metrics.json",), build_task_eval, check_task_eval, runs_model=True)


TASK_METRICS = {"answer": "task_answer", "answer_with_hint": "task_answer_with_hint", "hint": "task_hint",
                "majority": "task_majority"}  # fmt: skip
# a share of the task set itself (how many inverse queries match several people), not an accuracy
DESCRIPTIVE = ("task_shared_queries",)


def task_rows(run: Run, label: str, info: dict, strict: bool, notes: list) -> list[dict]:
    """Exact match per split without and with the hint at test time, the hint itself, the majority
    answer, the share of inverse queries matching several people, and the item counts."""
    task = info.get("task", label.split("__")[0])
    how = info.get("finetune") if info.get("mode") != "mixed" else f"mixed QAr={info.get('qa_ratio'):g}"

    def task_row(split, metric, value=None, note="", raw=False, n=None):
        pv, source = statement_value(run, task, metric) if split == "test" else (None, "")
        value = value if raw else pct(value)
        return row(run, finetune=how, split=split, attribute=task, task=label, metric=metric, value=value,
                    paper_value=pv, paper_source=source, note=note,
                    **stats(value, n, not raw and metric not in DESCRIPTIVE))  # fmt: skip

    try:
        metrics = task_metrics(run, label)
    except StageMissing as err:
        flag(str(err), strict, notes)
        return [task_row("test", "task_answer", note=str(err))]
    rows = []
    for split, block in metrics["splits"].items():
        for key, metric in TASK_METRICS.items():
            if key in block:
                rows.append(task_row(split, metric, block[key], n=block.get("items")))
        if split in (metrics.get("ambiguity") or {}):
            shared = metrics["ambiguity"][split]
            rows.append(
                task_row(split, "task_shared_queries", shared["shared_frac"], n=shared.get("queries"))
            )
    for split, n in (metrics.get("counts") or {}).items():
        if split in ("train", "test"):
            rows.append(task_row(split, "task_items", n, raw=True))
    return rows


def read_tasks(run: Run, strict: bool, notes: list) -> Readout:
    """Every manipulation task run's rows, in the order the plan listed them."""
    out = Readout()
    for label, info in run.task_runs().items():
        out.rows += task_rows(run, label, info, strict, notes)
    return out


TASK_READER = Reader(TASK_RUNS[0], read_tasks, after_runs=True)
