"""Write a dataset folder: python scripts/generate.py data=<preset> data.n_people=N out=DIR."""

import time

from omegaconf import OmegaConf

from biolab.cli import hydra_main
from biolab.data.dataset import DataConfig, write_dataset
from biolab.data.summary import summarize
from biolab.errors import ConfigError
from biolab.io import check_writable


@hydra_main("generate")
def main(cfg) -> None:
    """Write a biolab dataset folder: people.jsonl, bios.jsonl, qa.jsonl, meta.json.

    python scripts/generate.py data=<preset> data.n_people=N data.seed=S out=DIR [overwrite=true]
    Same config and seed give the same bytes; `workers=K` renders in K processes (same bytes).
    overwrite=true replaces a dataset folder, never a folder holding anything else.
    """
    if OmegaConf.is_missing(cfg, "out"):
        raise ConfigError("out=DIR is required (the dataset folder to write)")
    check_writable(cfg.out)
    data = DataConfig.from_dict(OmegaConf.to_container(cfg.data, resolve=True))
    start = time.perf_counter()
    meta = write_dataset(data, cfg.out, cfg.overwrite, cfg.workers, cfg.progress)
    print(summarize(cfg.out, meta, seconds=time.perf_counter() - start))


if __name__ == "__main__":
    main()
