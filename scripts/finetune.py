"""QA-finetune a pretrained model: python scripts/finetune.py --help"""

import json
from pathlib import Path

from omegaconf import OmegaConf

from biolab.cli import hydra_main
from biolab.data.dataset import read_meta
from biolab.data.tokens import Corpus, prepare_corpus
from biolab.errors import ConfigError
from biolab.eval.qa import evaluate_qa
from biolab.io import write_json
from biolab.model import load_model, load_pretrained
from biolab.train.finetune import expand_grid, finetune, finetune_configs
from biolab.train.pretrain import check_run_dir

GRID_ENTRIES = ("corpus", "grid", "grid.json")  # what a grid's out holds besides its runs


@hydra_main("finetune")
def main(cfg) -> None:
    """Finetune on the QAs of P_train people, then evaluate exact match on P_train and P_test.

    python scripts/finetune.py pretrained=RUN/model finetune=lora out=FT
    python scripts/finetune.py pretrained=RUN/model finetune=full out=FT \\
        'grid={finetune.train.lr: [1e-3, 3e-4]}'
    FT/model is the peft adapter (LoRA) or the model (full); FT/eval holds predictions.jsonl and
    metrics.json. With a grid, each combination runs in FT/grid/<name> and FT/grid.json names the best
    by P_test mean accuracy (as the paper reports its best run).
    """
    for key in ("pretrained", "out"):
        if OmegaConf.is_missing(cfg, key):
            raise ConfigError(f"{key}=... is required")
    out = Path(cfg.out)
    runs = []  # every combination is checked before any training starts
    for name, overrides in expand_grid(OmegaConf.to_container(cfg.grid, resolve=True) if cfg.grid else {}):
        c = OmegaConf.merge(cfg, OmegaConf.from_dotlist(overrides))
        ft, tr = finetune_configs(OmegaConf.to_container(c.finetune, resolve=True))
        runs.append((name, overrides, ft, tr))
    check_out(out, [name for name, *_ in runs], cfg.overwrite)
    pretrained = Path(cfg.pretrained)
    load_pretrained(pretrained)
    data_dir = Path(cfg.data_dir) if cfg.data_dir else pretrained.parent / "data"
    read_meta(data_dir)
    run_corpus = pretrained.parent / "corpus"
    same_data = (run_corpus / "meta.json").is_file() and (
        Path(Corpus(run_corpus).meta["data_dir"]) == data_dir.resolve()
    )
    if same_data:
        corpus = Corpus(run_corpus)
    else:  # tokenize the dataset with the pretrained model's own tokenizer
        corpus = Corpus(prepare_corpus(out, data_dir=data_dir, tokenizer_path=pretrained))
    results = {}
    for name, overrides, ft, tr in runs:
        run = out if len(runs) == 1 else out / "grid" / name
        finetune(run, pretrained, corpus, ft, tr, overwrite=cfg.overwrite, progress=cfg.progress)
        model, tokenizer = load_model(run / "model")
        metrics = evaluate_qa(
            model, tokenizer, data_dir, run / "eval", max_people=cfg.eval.max_people,
            batch_size=cfg.eval.batch_size, num_beams=cfg.eval.num_beams, progress=cfg.progress,
        )  # fmt: skip
        test_mean = metrics["splits"]["test"]["exact_match"]["mean"]
        results[name] = {"overrides": overrides, "test_mean": test_mean}
    if len(runs) > 1:
        best = max(results, key=lambda k: results[k]["test_mean"])
        write_json(
            out / "grid.json", {"best": best, "selected_on": "P_test mean exact match", "runs": results}
        )
        print(json.dumps({"best": best, **results[best]}))


def check_out(out: Path, names: list[str], overwrite: bool) -> None:
    """Before any work: ``out`` is writable and is this script's (one run, or a grid of runs)."""
    if len(names) == 1:
        check_run_dir(out, overwrite)
        return
    check_run_dir(out, overwrite, prepared=GRID_ENTRIES)
    for name in names:
        check_run_dir(out / "grid" / name, overwrite)


if __name__ == "__main__":
    main()
