"""Evaluate QA exact match of any model folder: python scripts/evaluate.py --help"""

import sys
from pathlib import Path

from omegaconf import OmegaConf

from biolab.cli import hydra_main
from biolab.data.dataset import verify_dataset
from biolab.data.people import SPLITS
from biolab.errors import ConfigError
from biolab.eval.qa import evaluate_qa
from biolab.model import check_training_data, load_model


@hydra_main("evaluate", renamed={"model": "model_dir"})
def main(cfg) -> None:
    """Generate answers to "{question} Answer:" for a dataset's people and score exact match.

    python scripts/evaluate.py model_dir=FT/model data_dir=RUN/data split=test
    python scripts/evaluate.py model_dir=MIXED_RUN/model data_dir=MIXED_RUN/data   (no finetune: Result 1)
    Writes predictions.jsonl and metrics.json into out (default: MODEL_DIR/../eval) and prints a table.
    """
    for key in ("model_dir", "data_dir"):
        if OmegaConf.is_missing(cfg, key):
            raise ConfigError(f"{key}=... is required")
    if cfg.split not in ("train", "test", "both"):
        raise ConfigError(f"split must be train, test or both, got {cfg.split!r}")
    warning = check_training_data(cfg.model_dir, verify_dataset(cfg.data_dir), cfg.allow_other_data)
    if warning:
        print(warning, file=sys.stderr)
    model, tokenizer = load_model(cfg.model_dir)
    splits = SPLITS if cfg.split == "both" else (cfg.split,)
    out = Path(cfg.out) if cfg.out else Path(cfg.model_dir).parent / "eval"
    evaluate_qa(model, tokenizer, cfg.data_dir, out, splits, cfg.max_people, cfg.batch_size, cfg.num_beams)


if __name__ == "__main__":
    main()
