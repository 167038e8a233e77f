"""Probe where a model stores attributes: python scripts/probe.py --help"""

import sys

from omegaconf import OmegaConf

from biolab.cli import hydra_main
from biolab.data.dataset import verify_dataset
from biolab.errors import ConfigError
from biolab.model import check_training_data
from biolab.probe.probes import ProbeConfig, run_probe


@hydra_main("probe", renamed={"model": "model_dir"})
def main(cfg) -> None:
    """Train probes on a pretrained model's hidden states; write probes.csv and heatmaps into out.

    python scripts/probe.py model_dir=RUN/model data_dir=RUN/data probe=p_fast out=PROBE
    python scripts/probe.py model_dir=RUN/model data_dir=RUN/data probe=q_paper out=QPROBE probe.steps=2000
    probe: p_fast / q_fast (linear probes on cached states, every layer), p_paper / q_paper (the
    paper's probes with an embedding update; *_full at the paper's 30,000 steps).
    """
    for key in ("model_dir", "data_dir", "out"):
        if OmegaConf.is_missing(cfg, key):
            raise ConfigError(f"{key}=... is required")
    probe = ProbeConfig.from_dict(OmegaConf.to_container(cfg.probe, resolve=True))
    warning = check_training_data(cfg.model_dir, verify_dataset(cfg.data_dir), cfg.allow_other_data)
    if warning:
        print(warning, file=sys.stderr)
    rows = run_probe(cfg.model_dir, cfg.data_dir, probe, cfg.out, cfg.overwrite, cfg.device)
    print(f"{len(rows)} probes -> {cfg.out}/probes.csv")


if __name__ == "__main__":
    main()
