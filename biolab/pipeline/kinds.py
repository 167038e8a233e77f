"""Every stage kind, declared once: its outputs, its build and its config check.

generate (data) -> tokenize (corpus) -> pretrain (BIO, or mixed with ``train.qa_ratio``) ->
finetune + evaluate, or evaluate alone (mixed training) -> probe; memorization and capacity (bits
of knowledge, Part 3.3) of the pretrained model; a manipulation task set (tasks) -> task_finetune or
task_mixed -> task_eval. Adding a kind is one ``Kind`` record here and its build function;
biolab.pipeline.plan wires it into runs.
"""

from __future__ import annotations

import json
from pathlib import Path

from biolab.data.dataset import DataConfig, write_dataset
from biolab.data.manipulation import validate_task, write_task_set
from biolab.data.task_tokens import load_task_texts, tokenize_task_set
from biolab.data.tokens import Corpus, TokenizerConfig, load_tokenizer, tokenize_dataset
from biolab.device import pick_device
from biolab.errors import ConfigError
from biolab.eval.capacity import CapacityConfig, measure_with_quantized
from biolab.eval.memorization import MemorizationConfig, bio_completion, verbatim
from biolab.eval.qa import EvalConfig, evaluate_qa
from biolab.eval.tasks import evaluate_task_set
from biolab.io import write_json
from biolab.model import ModelConfig, load_model
from biolab.pipeline.cache import Kind
from biolab.probe.probes import ProbeConfig, run_probe
from biolab.train.finetune import finetune, finetune_configs
from biolab.train.pretrain import TrainConfig, log_summary, pretrain


def build_data(cfg: dict, inputs: dict, out: Path, progress: bool, context: dict) -> None:
    write_dataset(DataConfig.from_dict(cfg), out, workers=1, progress=progress)


def build_corpus(cfg: dict, inputs: dict, out: Path, progress: bool, context: dict) -> None:
    tok = TokenizerConfig.from_dict(cfg["tokenizer"])
    tokenizer = load_tokenizer(tok.path) if tok.path else None
    tokenize_dataset(inputs["data"], out, tokenizer, tok.vocab_size)


def check_corpus(cfg: dict) -> None:
    TokenizerConfig.from_dict(cfg["tokenizer"])


def wandb_meta(kind: str, inputs: dict, out: Path, context: dict) -> dict:
    """How a stage's wandb run is found: named experiment/dataset/kind, grouped by experiment, tagged
    with dataset, scale and kind; its config names the stage and its inputs (``kind/key``)."""
    exp, data, scale = (str(context.get(k) or "?") for k in ("experiment", "data", "scale"))
    stages = {name: f"{Path(p).parent.name}/{Path(p).name}" for name, p in inputs.items()}
    return {"name": f"{exp}/{data}/{kind}", "group": exp, "tags": [data, scale, kind],
            "config": {"experiment": exp, "data": data, "scale": scale, "run": context.get("run"),
                       "stage": f"{kind}/{Path(out).name}", "inputs": stages}}  # fmt: skip


def build_pretrain(cfg: dict, inputs: dict, out: Path, progress: bool, context: dict) -> None:
    pretrain(out, Corpus(inputs["corpus"]), ModelConfig.from_dict(cfg["model"]),
             TrainConfig.from_dict(cfg["train"]), progress=progress,
             wandb_meta=wandb_meta("pretrain", inputs, out, context))  # fmt: skip


def check_training(cfg: dict) -> None:
    ModelConfig.from_dict(cfg["model"])
    TrainConfig.from_dict(cfg["train"]).validate()


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
    finetune_configs(cfg["finetune"])  # the finetune keys and its nested train
    if "eval" in cfg:
        EvalConfig.from_dict(cfg["eval"])


def build_probe(cfg: dict, inputs: dict, out: Path, progress: bool, context: dict) -> None:
    model = Path(inputs["pretrain"]) / "model"
    run_probe(model, inputs["data"], ProbeConfig.from_dict(cfg["probe"]), out, overwrite=True)


def check_probe(cfg: dict) -> None:
    ProbeConfig.from_dict(cfg["probe"])


def build_memorization(cfg: dict, inputs: dict, out: Path, progress: bool, context: dict) -> None:
    model, tokenizer = load_model(Path(inputs["pretrain"]) / "model")
    m = MemorizationConfig.from_dict(cfg["memorization"])
    common = dict(max_people=m.max_people, entries=m.entries, batch_size=m.batch_size, progress=progress)
    result = {
        "config": cfg["memorization"],
        "bio_completion": bio_completion(model, tokenizer, inputs["data"], **common),
        "verbatim": verbatim(model, tokenizer, inputs["data"], k=m.k, length=m.length, **common),
    }
    Path(out).mkdir(parents=True, exist_ok=True)
    write_json(Path(out) / "memorization.json", result)


def check_memorization(cfg: dict) -> None:
    MemorizationConfig.from_dict(cfg["memorization"])


def build_capacity(cfg: dict, inputs: dict, out: Path, progress: bool, context: dict) -> None:
    model_dir = Path(inputs["pretrain"]) / "model"
    model, tokenizer = load_model(model_dir)
    corpus = Corpus(inputs["corpus"])
    c = CapacityConfig.from_dict(cfg["capacity"])
    rows = measure_with_quantized(model, tokenizer, inputs["data"], corpus.bio_ids, c, progress)
    trained = json.loads((Path(inputs["pretrain"]) / "config.json").read_text())
    exposures = (trained.get("exposures") or {}).get("exposures")
    Path(out).mkdir(parents=True, exist_ok=True)
    record = {"config": cfg["capacity"], "exposures": exposures, "trained": trained.get("exposures"),
              "model": trained.get("model"), "rows": rows}  # fmt: skip
    write_json(Path(out) / "capacity.json", record)


def check_capacity(cfg: dict) -> None:
    CapacityConfig.from_dict(cfg["capacity"])


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


DATA = Kind("data", ("meta.json", "people.jsonl", "bios.jsonl", "qa.jsonl"), build_data, DataConfig.from_dict)
CORPUS = Kind("corpus", ("meta.json", "bios.bin", "bios.npz", "qa.bin", "qa.npz", "tokenizer"), build_corpus,
              check_corpus)  # fmt: skip
PRETRAIN = Kind("pretrain", ("model",), build_pretrain, check_training, resumable=True, runs_model=True)
FINETUNE = Kind("finetune", ("model", "eval/metrics.json"), build_finetune, check_finetune, resumable=True,
                runs_model=True)  # fmt: skip
EVALUATE = Kind("evaluate", ("eval/metrics.json",), build_evaluate, check_evaluate, runs_model=True)
PROBE = Kind("probe", ("probes.csv",), build_probe, check_probe, resumable=True, runs_model=True)
MEMORIZATION = Kind("memorization", ("memorization.json",), build_memorization, check_memorization,
                    runs_model=True)  # fmt: skip
CAPACITY = Kind("capacity", ("capacity.json",), build_capacity, check_capacity, runs_model=True)
TASKS = Kind("tasks", ("meta.json", "items.jsonl", "items.bin", "items.npz", "items.json"), build_tasks,
             check_tasks)  # fmt: skip
TASK_FINETUNE = Kind("task_finetune", ("model",), build_task_finetune, check_finetune, resumable=True,
                     runs_model=True)  # fmt: skip
TASK_MIXED = Kind("task_mixed", ("model",), build_task_mixed, check_training, resumable=True, runs_model=True)
TASK_EVAL = Kind("task_eval", ("eval/metrics.json",), build_task_eval, check_task_eval, runs_model=True)

KINDS = {k.name: k for k in (DATA, CORPUS, PRETRAIN, FINETUNE, EVALUATE, PROBE, MEMORIZATION, CAPACITY,
                             TASKS, TASK_FINETUNE, TASK_MIXED, TASK_EVAL)}  # fmt: skip
