"""QA-finetune a pretrained model: python scripts/finetune.py --help"""

import functools
import json
from pathlib import Path

from omegaconf import OmegaConf

from biolab.cli import hydra_main
from biolab.data.dataset import read_meta
from biolab.data.tokens import Corpus, prepare_corpus
from biolab.device import pick_device
from biolab.errors import ConfigError
from biolab.eval.qa import EvalConfig, check_qa_dataset, evaluate_qa, metrics_table
from biolab.io import write_json
from biolab.model import load_model, model_type, not_a_model, saved_masked_lm, training_data
from biolab.status import read_status
from biolab.train.finetune import (
    check_apart,
    config_changes,
    finetune,
    finetune_configs,
    finetune_run_config,
    grid_points,
    model_digest,
)
from biolab.train.run_folder import check_run_dir

GRID_ENTRIES = ("corpus", "grid", "grid.json")  # what a grid's out holds besides its runs


@hydra_main("finetune")
def main(cfg) -> None:
    """Finetune on the QAs of P_train people, then evaluate exact match on P_train and P_test.

    python scripts/finetune.py pretrained=RUN/model finetune=lora out=FT
    python scripts/finetune.py pretrained=RUN/model finetune=full out=FT \\
        'grid={finetune.train.lr: [1e-3, 3e-4]}'
    FT/model is the peft adapter (LoRA) or the model (full); FT/eval holds predictions.jsonl and
    metrics.json. With a grid, each combination runs in FT/grid/<name> and FT/grid.json names the best
    by P_test mean accuracy (as the paper reports its best run). Re-running the same command resumes:
    an unfinished training continues from its last checkpoint, a missing or killed evaluation is
    redone, and a run trained and evaluated as asked is reused; overwrite=true trains again.
    """
    for key in ("pretrained", "out"):
        if OmegaConf.is_missing(cfg, key):
            raise ConfigError(f"{key}=... is required")
    out, pretrained = Path(cfg.out), Path(cfg.pretrained)
    data_dir = Path(cfg.data_dir) if cfg.data_dir else pretrained.parent / "data"
    eval_cfg = EvalConfig.from_dict(OmegaConf.to_container(cfg.eval, resolve=True))
    grid = OmegaConf.to_container(cfg.grid, resolve=True) if cfg.grid is not None else None
    runs = []  # every combination is checked before any training starts
    for name, overrides, finetune_cfg in grid_points(
        OmegaConf.to_container(cfg.finetune, resolve=True), grid
    ):
        runs.append((name, overrides, *finetune_configs(finetune_cfg)))
    check_apart(out, pretrained=pretrained, data_dir=data_dir)
    if model_type(pretrained) is None:
        raise not_a_model(pretrained, "pretrained")
    if saved_masked_lm(pretrained) and eval_cfg.num_beams != 1:
        raise ConfigError("a masked LM fills its answer's masks at once: use eval.num_beams=1")
    data_meta = read_meta(data_dir)
    check_qa_dataset(data_meta, data_dir)
    check_out(out, runs, cfg.overwrite, pretrained, data_meta)
    corpus = functools.cache(lambda: finetune_corpus(out, pretrained, data_dir))  # only if one trains
    results = {}
    for name, overrides, ft, tr in runs:
        run = run_dir(out, name, len(runs))
        trained = cfg.overwrite or (read_status(run) or {}).get("status") != "done"
        if trained:
            finetune(run, pretrained, corpus(), ft, tr, overwrite=cfg.overwrite, progress=cfg.progress)
        metrics = evaluated(run, data_dir, eval_cfg, reuse=not trained, progress=cfg.progress)
        test_mean = metrics["splits"]["test"]["exact_match"]["mean"]
        results[name] = {"overrides": overrides, "test_mean": test_mean}
    if len(runs) > 1:
        best = max(results, key=lambda k: results[k]["test_mean"])
        write_json(
            out / "grid.json", {"best": best, "selected_on": "P_test mean exact match", "runs": results}
        )
        print(json.dumps({"best": best, **results[best]}))


def run_dir(out: Path, name: str, n_runs: int) -> Path:
    return out if n_runs == 1 else out / "grid" / name


def check_out(out: Path, runs: list[tuple], overwrite: bool, pretrained: Path, data_meta: dict) -> None:
    """Before any work: ``out`` is writable and is this script's (one run, or a grid of runs); a
    finished run to be reused was trained as asked, on the dataset of ``data_meta``."""
    if len(runs) > 1:
        finetune_run_config(out)
        check_run_dir(out, overwrite, prepared=GRID_ENTRIES)
    for name, _, ft, tr in runs:
        run = run_dir(out, name, len(runs))
        config = finetune_run_config(run)
        check_run_dir(run, overwrite=True)  # a finished run is resumed (reused), not refused
        if overwrite or config is None or (read_status(run) or {}).get("status") != "done":
            continue
        changed = config_changes(config, ft, tr, pretrained)
        trained_on = training_data(run / "model")
        if trained_on is not None and trained_on.get("sha256") != data_meta["sha256"]:
            changed.append("data_dir")
        if changed:
            raise ConfigError(
                f"{run} holds a finished run trained with other {', '.join(changed)}; pass overwrite=true "
                "to train it again, or use a new out"
            )


def finetune_corpus(out: Path, pretrained: Path, data_dir: Path) -> Corpus:
    """The pretraining run's own corpus when it tokenized ``data_dir``; else ``data_dir`` tokenized
    with the pretrained model's tokenizer into ``out/corpus``."""
    run_corpus = pretrained.parent / "corpus"
    if (run_corpus / "meta.json").is_file():
        corpus = Corpus(run_corpus)
        if Path(corpus.meta["data_dir"]) == data_dir.resolve():
            return corpus
    return Corpus(prepare_corpus(out, data_dir=data_dir, tokenizer_path=pretrained))


def evaluated(run: Path, data_dir: Path, eval_cfg: EvalConfig, reuse: bool, progress: bool) -> dict:
    """``run``'s QA metrics: those of an earlier evaluation when ``reuse`` and it fits, else new ones."""
    metrics = reusable_eval(run, data_dir, eval_cfg) if reuse else None
    if metrics is not None:
        return metrics
    device = pick_device()
    model, tokenizer = load_model(run / "model", device=device)
    return evaluate_qa(
        model, tokenizer, data_dir, run / "eval", max_people=eval_cfg.max_people,
        batch_size=eval_cfg.batch_size_on(device), num_beams=eval_cfg.num_beams, progress=progress,
        extra={"model_sha256": model_digest(run / "model")},
    )  # fmt: skip


def reusable_eval(run: Path, data_dir: Path, eval_cfg: EvalConfig) -> dict | None:
    """``run``'s eval/metrics.json when it scores this run's model on ``data_dir`` as ``eval_cfg``
    asks (printed, as a rerun's answer); None when it is missing, killed or of another evaluation."""
    try:
        metrics = json.loads((run / "eval" / "metrics.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    asked = {"data_dir": str(data_dir.resolve()), "num_beams": eval_cfg.num_beams,
             "max_people": eval_cfg.max_people, "model_sha256": model_digest(run / "model")}  # fmt: skip
    if not isinstance(metrics, dict) or any(metrics.get(k, KeyError) != v for k, v in asked.items()):
        return None
    print(f"{run}: trained and evaluated before; its eval/metrics.json (overwrite=true trains it again):")
    print(metrics_table(metrics))
    return metrics


if __name__ == "__main__":
    main()
