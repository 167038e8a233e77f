"""Training curves from a run's metrics.jsonl: loss, and BIO first-token accuracy (paper Fig. 1b)."""

from __future__ import annotations

import json
from pathlib import Path

from biolab.io import save_figure


def read_metrics(run_dir: str | Path) -> list[dict]:
    path = Path(run_dir) / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


def plot_training(run_dir: str | Path, out: str | Path) -> Path:
    """Loss (left) and BIO first-token accuracy of P_train / P_test per attribute (right)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_metrics(run_dir)
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.6))
    loss = [(r["step"], r["loss"]) for r in rows if "loss" in r]
    left.plot(*zip(*loss, strict=True), lw=1)
    left.set(xlabel="step", ylabel="training loss", yscale="log", title=Path(run_dir).name)
    evals = [r for r in rows if "bio_first_token/train/mean" in r]
    prefix = "bio_first_token/train/"  # the dataset's own attributes (a bioD dataset has K of its own)
    names = [
        k[len(prefix) :] for k in (evals[0] if evals else {}) if k.startswith(prefix) and k != prefix + "mean"
    ]
    for split, style in (("train", "-"), ("test", "--")):
        for i, a in enumerate([*names, "mean"]):
            key = f"bio_first_token/{split}/{a}"
            right.plot([r["step"] for r in evals], [r[key] for r in evals], style, color=f"C{i}",
                       lw=2 if a == "mean" else 1, label=a if split == "train" else None)  # fmt: skip
    right.set(xlabel="step", ylabel="BIO first-token accuracy", ylim=(0, 1.02),
              title="solid: P_train, dashed: P_test")  # fmt: skip
    right.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return save_figure(fig, out)
