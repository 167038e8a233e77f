"""Evaluate QA exact match of any model folder: python scripts/evaluate.py --help"""

import sys
from pathlib import Path

from omegaconf import OmegaConf

from biolab.cli import hydra_main
from biolab.data.dataset import verify_dataset
from biolab.data.people import SPLITS
from biolab.device import pick_device
from biolab.errors import ConfigError
from biolab.eval.qa import EvalConfig, check_qa_dataset, evaluate_qa
from biolab.io import check_writable
from biolab.model import check_training_data, is_model_folder, load_model, not_a_model


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
    try:  # the same checks as a finetune's eval section, whose keys are top-level here
        e = EvalConfig.from_dict(
            {k: cfg[k] for k in ("max_people", "batch_size", "gpu_batch_size", "num_beams")}
        )
    except ConfigError as err:
        raise ConfigError(str(err).replace("eval.", "")) from None
    device = pick_device(cfg.device)
    meta = verify_dataset(cfg.data_dir)
    check_qa_dataset(meta, cfg.data_dir)
    model_dir = Path(cfg.model_dir)
    if not is_model_folder(model_dir):
        raise not_a_model(model_dir, "model_dir")
    out = check_writable(Path(cfg.out) if cfg.out else model_dir.parent / "eval")
    warning = check_training_data(model_dir, meta, cfg.allow_other_data)
    if warning:
        print(warning, file=sys.stderr)
    model, tokenizer = load_model(model_dir, device=device)
    splits = SPLITS if cfg.split == "both" else (cfg.split,)
    evaluate_qa(
        model, tokenizer, cfg.data_dir, out, splits, cfg.max_people, e.batch_size_on(device), cfg.num_beams
    )


if __name__ == "__main__":
    main()
