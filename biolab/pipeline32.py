"""Part 3.2 stages of an experiment (paper section 6), planned beside the Part 3.1 ones.

Config (``conf/run.yaml``): ``tasks32.tasks`` lists task names (or ``{task: NAME, <key>: value}`` for
one task's own n_train / n_test / hint_prob / seed / modes / qa_ratios), each trained in every
``tasks32.modes`` (or its own ``modes``: mixed training costs one pretraining per task and ratio):

- ``finetune``: the run's BIO-pretrained model finetuned on the task's P_train items (the finetune
  preset, with ``tasks32.finetune`` overrides); Part 3.2 Result 5 finds starting from the
  QA-finetuned model makes a minimal difference, so we start from the BIO-pretrained one.
- ``mixed``: a fresh model pretrained on BIO + the task's P_train items, one per ``qa_ratios``
  value (the paper's QAr 0.5 / 0.8), with the run's model and train presets.

Stages: ``tasks`` (the task set and its tokenized P_train items), ``task_finetune`` or
``task_mixed`` (the model), ``task_eval`` (exact match on P_train and P_test items). With
``memorization.enabled`` a ``memorization`` stage measures BIO completion and verbatim
regurgitation of the run's pretrained model. With neither, nothing here touches the plan.
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import OmegaConf

from biolab.data.tasks32 import HINT_TASKS, TASKS
from biolab.data.tasks32 import _validate as validate_task_args
from biolab.errors import ConfigError
from biolab.stages import Stage

MODES = ("finetune", "mixed")
TASK_KEYS = ("n_train", "n_test", "hint_prob", "seed")
TRAIN_KEYS = ("modes", "qa_ratios")  # how a task is trained, not what it is: not in its label
MEMORIZATION_KEYS = ("max_people", "entries", "k", "length", "batch_size")


def task_specs(t32: dict) -> list[dict]:
    """One spec per listed task: ``{label, task, n_train, n_test, hint_prob, seed, modes}``; the label
    is the task name plus the task keys the entry sets itself (``month_parity-hint_prob0.0``);
    ``modes`` is a list of (mode, qa_ratio) from the entry's own or the shared ``modes``/``qa_ratios``."""
    specs = []
    for entry in t32.get("tasks") or []:
        own = dict(entry) if isinstance(entry, dict) else {"task": entry}
        unknown = sorted(set(own) - {"task", *TASK_KEYS, *TRAIN_KEYS})
        if unknown or "task" not in own:
            keys = ", ".join((*TASK_KEYS, *TRAIN_KEYS))
            raise ConfigError(f"tasks32.tasks entry {entry!r}: keys are task and {keys}")
        task = own.pop("task")
        modes = _modes({k: own.pop(k, t32.get(k)) for k in TRAIN_KEYS})
        if task not in TASKS:
            raise ConfigError(f"unknown Part 3.2 task {task!r}; choose from: {', '.join(TASKS)}")
        spec = {"task": task, **{k: own.get(k, t32.get(k)) for k in TASK_KEYS}}
        if spec["seed"] is None or spec["hint_prob"] is None:
            raise ConfigError(f"tasks32 {task}: seed and hint_prob must be set")
        if task not in HINT_TASKS:
            spec["hint_prob"] = 0.0  # no hint exists: the task set is the same whatever it says
        validate_task_args(task, spec["n_train"], spec["n_test"], spec["hint_prob"])
        spec["label"] = task + "".join(f"-{k}{own[k]}" for k in sorted(own))
        spec["modes"] = modes
        specs.append(spec)
    return specs


def _modes(t32: dict) -> list[tuple[str, float | None]]:
    modes = list(t32.get("modes") or [])
    bad = [m for m in modes if m not in MODES]
    if bad or not modes:
        raise ConfigError(f"tasks32.modes must be a non-empty list of {', '.join(MODES)}, got {modes}")
    out: list[tuple[str, float | None]] = []
    for mode in dict.fromkeys(modes):
        if mode == "finetune":
            out.append(("finetune", None))
            continue
        ratios = list(t32.get("qa_ratios") or [])
        if not ratios or any(not isinstance(r, int | float) or not 0 < r <= 1 for r in ratios):
            raise ConfigError(f"tasks32.qa_ratios must be a non-empty list of numbers in (0, 1]: {ratios}")
        out += [("mixed", float(r)) for r in dict.fromkeys(ratios)]
    return out


def _memorization_config(cfg: dict) -> dict | None:
    mem = cfg.get("memorization") or {}
    if not mem.get("enabled"):
        return None
    c = {k: mem.get(k) for k in MEMORIZATION_KEYS}
    if not isinstance(c["k"], int) or c["k"] < 1 or (c["length"] is not None and c["length"] < 1):
        raise ConfigError(f"memorization.k must be >= 1 and memorization.length null or >= 1, got {c}")
    if c["max_people"] is not None and c["max_people"] < 1:
        raise ConfigError(f"memorization.max_people must be null or >= 1, got {c['max_people']}")
    if c["batch_size"] is None or c["batch_size"] < 1:
        raise ConfigError(f"memorization.batch_size must be >= 1, got {c['batch_size']}")
    return c


def plan_extras(cfg: dict, data: Stage, corpus: Stage, pretrain: Stage) -> tuple[dict, dict, list[Stage]]:
    """(manifest ``stages`` entries, manifest fields, stages to build) of the Part 3.2 work on one
    dataset; all empty when neither ``tasks32.tasks`` nor ``memorization.enabled`` is set."""
    stages: dict = {}
    fields: dict = {}
    build: list[Stage] = []
    mem = _memorization_config(cfg)
    if mem is not None:
        stage = Stage("memorization", {"memorization": mem}, {"pretrain": pretrain, "data": data})
        stages["memorization"] = stage.rel()
        build.append(stage)
    t32 = cfg.get("tasks32") or {}
    specs = task_specs(t32)
    if not specs:
        return stages, fields, build
    overrides = t32.get("finetune") or {}
    ft = OmegaConf.to_container(OmegaConf.merge(cfg["finetune"], overrides), resolve=True)
    max_items = t32.get("max_items")
    if max_items is not None and (not isinstance(max_items, int) or max_items < 1):
        raise ConfigError(f"tasks32.max_items must be null or an int >= 1, got {max_items!r}")
    ev = {"max_items": max_items, "batch_size": cfg["eval"]["batch_size"],
          "num_beams": cfg["eval"]["num_beams"]}  # fmt: skip
    stages["tasks32"], fields["tasks32"] = {}, {}
    for spec in specs:
        task_cfg = {k: spec[k] for k in ("task", *TASK_KEYS)}
        tasks = Stage("tasks", {"task": task_cfg}, {"data": data, "corpus": corpus})
        for mode, ratio in spec["modes"]:
            if mode == "finetune":
                label = f"{spec['label']}__ft"
                train = Stage("task_finetune", {"finetune": ft},
                              {"pretrain": pretrain, "tasks": tasks, "corpus": corpus})  # fmt: skip
            else:
                label = f"{spec['label']}__mix{ratio:g}"
                tr = {**cfg["train"], "qa_ratio": ratio}
                inputs = {"corpus": corpus, "tasks": tasks}
                train = Stage("task_mixed", {"model": cfg["model"], "train": tr}, inputs)
            if label in fields["tasks32"]:
                raise ConfigError(f"tasks32 lists {label} twice; give each entry its own settings")
            evaluate = Stage("task_eval", {"eval": ev}, {"model": train, "tasks": tasks})
            stages["tasks32"][label] = {"tasks": tasks.rel(), "train": train.rel(), "eval": evaluate.rel()}
            name = ft.get("name") if mode == "finetune" else None
            fields["tasks32"][label] = {**task_cfg, "mode": mode, "qa_ratio": ratio, "finetune": name}
            build.append(evaluate)
    return stages, fields, build


def validate_stage(stage: Stage) -> None:
    """Typed checks of the Part 3.2 stage kinds (the others are checked by biolab.pipeline)."""
    from biolab.model import ModelConfig
    from biolab.train.finetune import finetune_configs
    from biolab.train.pretrain import TrainConfig

    c = stage.config
    if stage.kind == "tasks":
        t = c["task"]
        validate_task_args(t["task"], t["n_train"], t["n_test"], t["hint_prob"])
    elif stage.kind == "task_finetune":
        finetune_configs(c["finetune"])  # validates both
    elif stage.kind == "task_mixed":
        ModelConfig.from_dict(c["model"])
        TrainConfig.from_dict(c["train"]).validate()


def builders(progress: bool = True) -> dict:
    """kind -> builder(config, input folders, out) for the Part 3.2 stage kinds."""

    def tasks(cfg, inputs, out):
        from biolab.data.task_tokens import tokenize_task_set
        from biolab.data.tasks32 import write_task_set
        from biolab.data.tokens import Corpus

        t = cfg["task"]
        write_task_set(inputs["data"], t["task"], out, n_train=t["n_train"], n_test=t["n_test"],
                       seed=t["seed"], hint_prob=t["hint_prob"])  # fmt: skip
        tokenize_task_set(out, Corpus(inputs["corpus"]).tokenizer())

    def task_finetune(cfg, inputs, out):
        from biolab.data.task_tokens import load_task_texts
        from biolab.data.tokens import Corpus
        from biolab.train.finetune import finetune, finetune_configs

        ft, tr = finetune_configs(cfg["finetune"])
        pretrained, texts = Path(inputs["pretrain"]) / "model", load_task_texts(inputs["tasks"])
        corpus = Corpus(inputs["corpus"])
        finetune(out, pretrained, corpus, ft, tr, progress=progress, texts=texts)

    def task_mixed(cfg, inputs, out):
        from biolab.data.task_tokens import load_task_texts
        from biolab.data.tokens import Corpus
        from biolab.model import ModelConfig
        from biolab.train.pretrain import TrainConfig, pretrain

        pretrain(out, Corpus(inputs["corpus"]), ModelConfig.from_dict(cfg["model"]),
                 TrainConfig.from_dict(cfg["train"]), progress=progress,
                 qa_texts=load_task_texts(inputs["tasks"]))  # fmt: skip

    def task_eval(cfg, inputs, out):
        from biolab.evaluate import load_model
        from biolab.evaluate32 import evaluate_task_set

        model, tokenizer = load_model(Path(inputs["model"]) / "model")
        e = cfg["eval"]
        evaluate_task_set(
            model, tokenizer, inputs["tasks"], Path(out) / "eval", max_items=e["max_items"],
            batch_size=e["batch_size"], num_beams=e["num_beams"], progress=progress,
        )  # fmt: skip

    def memorization(cfg, inputs, out):
        from biolab.evaluate import load_model
        from biolab.io import write_json
        from biolab.memorization import bio_completion, verbatim

        model, tokenizer = load_model(Path(inputs["pretrain"]) / "model")
        m = cfg["memorization"]
        common = dict(max_people=m["max_people"], entries=m["entries"], batch_size=m["batch_size"],
                      progress=progress)  # fmt: skip
        result = {
            "config": m,
            "bio_completion": bio_completion(model, tokenizer, inputs["data"], **common),
            "verbatim": verbatim(model, tokenizer, inputs["data"], k=m["k"], length=m["length"], **common),
        }
        Path(out).mkdir(parents=True, exist_ok=True)
        write_json(Path(out) / "memorization.json", result)

    return {"tasks": tasks, "task_finetune": task_finetune, "task_mixed": task_mixed, "task_eval": task_eval,
            "memorization": memorization}  # fmt: skip
