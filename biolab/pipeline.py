"""An experiment as a stage graph: plan the stages of each (dataset, finetune) combination from a
composed config, build them through the cache (biolab.stages), and record one manifest per run in
``ROOT/runs/<experiment>/<run>.json`` for the report."""

from __future__ import annotations

from pathlib import Path

from omegaconf import OmegaConf

from biolab.errors import ConfigError
from biolab.io import write_json
from biolab.paper import check_sources, check_statements
from biolab.stages import Stage, check_root, ensure

QA_EVAL = ("finetune", "direct", "none")


def plan_runs(cfg: dict, probes: dict[str, dict] | None = None) -> list[dict]:
    """Manifests (with Stage objects under ``"stage_objs"``) for one composed per-dataset config.

    ``cfg`` holds data, model, train, finetune, tokenizer, eval, qa_eval, grid, experiment, scale,
    paper, and optionally tasks32 and memorization (Part 3.2, biolab.pipeline32); ``probes`` maps a
    probe preset name to its config."""
    if cfg["qa_eval"] not in QA_EVAL:
        raise ConfigError(f"qa_eval must be one of {', '.join(QA_EVAL)}, got {cfg['qa_eval']!r}")
    check_statements((cfg.get("paper") or {}).get("statements"))  # a typo fails before any work
    check_sources(cfg.get("paper"))
    # max_values came after many roots were built: left out at its default, their data keys hold.
    data = Stage("data", {k: v for k, v in cfg["data"].items() if k != "max_values" or v})
    corpus = Stage("corpus", {"tokenizer": cfg["tokenizer"]}, {"data": data})
    pretrain = Stage("pretrain", {"model": cfg["model"], "train": cfg["train"]}, {"corpus": corpus})
    probe_stages = {
        name: Stage("probe", {"probe": p}, {"pretrain": pretrain, "data": data})
        for name, p in (probes or {}).items()
    }
    evals: list[tuple[str, Stage | None, dict]] = []
    if cfg["qa_eval"] == "finetune":
        from biolab.train.finetune import expand_grid

        for name, overrides in expand_grid(cfg.get("grid") or {}):
            if any(not o.startswith("finetune.") for o in overrides):
                raise ConfigError(f"grid keys must be finetune.*, got {overrides}")
            merged = OmegaConf.merge({"finetune": cfg["finetune"]}, OmegaConf.from_dotlist(overrides))
            ft = OmegaConf.to_container(merged, resolve=True)["finetune"]
            inputs = {"pretrain": pretrain, "data": data, "corpus": corpus}
            stage = Stage("finetune", {"finetune": ft, "eval": cfg["eval"]}, inputs)
            evals.append((name, stage, ft))
    elif cfg["qa_eval"] == "direct":
        evals.append(
            ("run", Stage("evaluate", {"eval": cfg["eval"]}, {"pretrain": pretrain, "data": data}), None)
        )
    else:
        evals.append(("run", None, None))
    from biolab.pipeline32 import plan_extras

    extra_stages, extra_fields, extra_objs = plan_extras(cfg, data, corpus, pretrain)
    runs = []
    for grid_name, ev, ft in evals:
        run = cfg["data"]["name"] if grid_name == "run" else f"{cfg['data']['name']}__{grid_name}"
        stages = {"data": data.rel(), "corpus": corpus.rel(), "pretrain": pretrain.rel(),
                  "probe": {n: s.rel() for n, s in probe_stages.items()}}  # fmt: skip
        if ev is not None:
            stages["eval"] = ev.rel()
        stages.update(extra_stages)
        runs.append({
            "experiment": cfg["experiment"], "scale": cfg["scale"], "run": run, "data": cfg["data"]["name"],
            "model": cfg["model"]["name"], "train": cfg["train"]["name"],
            "finetune": None if ft is None else ft.get("name", ft.get("method")),
            "finetune_method": None if ft is None else ft.get("method"), "grid": grid_name,
            "qa_ratio": cfg["train"].get("qa_ratio", 0.0), "stages": stages, "paper": cfg.get("paper") or {},
            **extra_fields,
            "stage_objs": [s for s in (pretrain, ev, *probe_stages.values(), *extra_objs) if s is not None],
        })  # fmt: skip
    return runs


def make_builders(progress: bool = True) -> dict:
    """kind -> builder(config, input folders, out): the library calls behind each stage."""

    def data(cfg, inputs, out):
        from biolab.data.dataset import DataConfig, write_dataset

        write_dataset(DataConfig.from_dict(cfg), out, workers=1, progress=progress)

    def corpus(cfg, inputs, out):
        from biolab.data.tokens import load_tokenizer, tokenize_dataset

        tok = cfg["tokenizer"]
        tokenizer = load_tokenizer(tok["path"]) if tok.get("path") else None
        tokenize_dataset(inputs["data"], out, tokenizer, tok["vocab_size"])

    def pretrain(cfg, inputs, out):
        from biolab.data.tokens import Corpus
        from biolab.model import ModelConfig
        from biolab.train.pretrain import TrainConfig
        from biolab.train.pretrain import pretrain as run_pretrain

        run_pretrain(out, Corpus(inputs["corpus"]), ModelConfig.from_dict(cfg["model"]),
                     TrainConfig.from_dict(cfg["train"]), progress=progress)  # fmt: skip

    def evaluate(cfg, inputs, out, model_dir=None):
        from biolab.evaluate import evaluate_qa, load_model

        model, tokenizer = load_model(model_dir or Path(inputs["pretrain"]) / "model")
        e = cfg["eval"]
        evaluate_qa(model, tokenizer, inputs["data"], Path(out) / "eval", max_people=e["max_people"],
                    batch_size=e["batch_size"], num_beams=e["num_beams"], progress=progress)  # fmt: skip

    def finetune(cfg, inputs, out):
        from biolab.data.tokens import Corpus
        from biolab.train.finetune import finetune as run_finetune
        from biolab.train.finetune import finetune_configs

        ft, tr = finetune_configs(cfg["finetune"])
        pretrained = Path(inputs["pretrain"]) / "model"
        run_finetune(out, pretrained, Corpus(inputs["corpus"]), ft, tr, progress=progress)
        evaluate(cfg, inputs, out, model_dir=Path(out) / "model")

    def probe(cfg, inputs, out):
        from biolab.probe.probes import ProbeConfig, run_probe

        model = Path(inputs["pretrain"]) / "model"
        run_probe(model, inputs["data"], ProbeConfig.from_dict(cfg["probe"]), out, overwrite=True)

    from biolab.pipeline32 import builders

    return {"data": data, "corpus": corpus, "pretrain": pretrain, "finetune": finetune, "evaluate": evaluate,
            "probe": probe, **builders(progress)}  # fmt: skip


def validate_plan(runs: list[dict]) -> None:
    """Typed checks of every stage config before any work starts."""
    from biolab.data.dataset import DataConfig
    from biolab.model import ModelConfig
    from biolab.pipeline32 import validate_stage
    from biolab.probe.probes import ProbeConfig
    from biolab.train.finetune import finetune_configs
    from biolab.train.pretrain import TrainConfig

    for run in runs:
        for stage in _with_inputs(run["stage_objs"]):
            c = stage.config
            if stage.kind == "pretrain":
                DataConfig.from_dict(stage.inputs["corpus"].inputs["data"].config).validate()
                ModelConfig.from_dict(c["model"])
                TrainConfig.from_dict(c["train"]).validate()
            elif stage.kind == "finetune":
                finetune_configs(c["finetune"])  # validates both
            elif stage.kind == "probe":
                ProbeConfig.from_dict(c["probe"])
            else:
                validate_stage(stage)


def _with_inputs(stages: list[Stage]) -> list[Stage]:
    """``stages`` and every stage they are built from, each once (a task_eval's training stage)."""
    out: dict[str, Stage] = {}
    todo = list(stages)
    while todo:
        stage = todo.pop(0)
        if stage.key not in out:
            out[stage.key] = stage
            todo += list(stage.inputs.values())
    return list(out.values())


def _build_run(run: dict, root: Path, progress: bool, log=print, seen: dict | None = None) -> Path:
    builders = make_builders(progress)
    seen = {} if seen is None else seen  # each stage is checked once per run, not once per consumer
    log(f"== {run['experiment']} / {run['run']} ({run['scale']})")
    for stage in run["stage_objs"]:
        ensure(stage, root, builders, log, seen)
    manifest = {k: v for k, v in run.items() if k != "stage_objs"}
    path = root / "runs" / run["experiment"] / f"{run['run']}.json"
    write_json(path, manifest)
    return path


def _build_run_in_worker(run: dict, root: Path, progress: bool, threads: int) -> Path:
    import torch

    torch.set_num_threads(threads)
    name = run["run"]
    return _build_run(run, root, progress, log=lambda m: print(f"[{name}] {m}", flush=True))


def run_experiment(
    runs: list[dict], root: str | Path, progress: bool = True, log=print, jobs: int = 1
) -> list[Path]:
    """Build every run's stages through the cache; write its manifest; return the manifest paths.

    ``jobs > 1`` builds runs in that many processes, each with its share of the CPU threads (small
    models use one core better than two); stages shared between runs are built once (stage lock)."""
    root = check_root(root)
    validate_plan(runs)
    if jobs <= 1 or len(runs) == 1:
        seen: dict = {}
        return [_build_run(run, root, progress, log, seen) for run in runs]
    import multiprocessing as mp
    import os
    from concurrent.futures import ProcessPoolExecutor

    threads = max(1, (os.cpu_count() or 1) // jobs)
    with ProcessPoolExecutor(jobs, mp_context=mp.get_context("spawn")) as pool:
        futures = [pool.submit(_build_run_in_worker, run, root, False, threads) for run in runs]
        return [f.result() for f in futures]
