"""What a stage kind is: the ``Kind`` record the stage cache builds from, and the keys that never
change what a stage makes (left out of its key, of run names and of manifests)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from biolab.train.config import LOGGING_KEYS

# Keys that change logging or bookkeeping, never the artifact, matched by a key's last part at any depth
# (train.wandb, finetune.train.wandb): left out of the stage hash, so that turning wandb on does not
# retrain a model, and of run names and manifests (biolab.pipeline.plan.run_overrides), so that one run
# keeps one name whatever it logs. Adding or removing one changes the hash of every stage whose config
# holds it: the finished stages of existing roots would no longer be found.
VOLATILE = (LOGGING_KEYS - {"name"}) | {"progress"}  # a preset's name stays in: old hashes hold it


def is_volatile(key: str) -> bool:
    """Whether a dotted config key (``finetune.train.wandb``) is one of VOLATILE's."""
    return key.rsplit(".", 1)[-1] in VOLATILE


def no_check(config: dict) -> None:
    """The check of a kind whose config has nothing to go wrong before its build."""


@dataclass(frozen=True)
class Kind:
    """One kind of stage: everything the cache and the planner need to know about it.

    ``build(config, inputs, out, progress, context)`` makes the outputs in ``out`` from the input
    stages' folders (``inputs``: name -> Path) and may return fields for status.json; ``context``
    names the run that asked for the stage first (experiment, data, scale: for logging only, never
    part of the key, since a stage is shared by every run that needs it); ``check(config)``
    raises ConfigError on a bad config before any work starts; a ``resumable`` kind builds in its
    own folder and picks up where a killed build stopped; a kind that ``runs_model`` takes its device
    from ``biolab.device.pick_device`` (tests/test_pipeline.py holds every such kind to it)."""

    name: str
    outputs: tuple[str, ...]
    build: Callable[..., dict | None]
    check: Callable[[dict], None] = no_check
    resumable: bool = False
    runs_model: bool = False


def wandb_meta(kind: str, inputs: dict, out: Path, context: dict) -> dict:
    """How a stage's wandb run is found: named experiment/dataset/kind, grouped by experiment, tagged
    with dataset, scale and kind; its config names the stage and its inputs (``kind/key``)."""
    exp, data, scale = (str(context.get(k) or "?") for k in ("experiment", "data", "scale"))
    stages = {name: f"{Path(p).parent.name}/{Path(p).name}" for name, p in inputs.items()}
    return {"name": f"{exp}/{data}/{kind}", "group": exp, "tags": [data, scale, kind],
            "config": {"experiment": exp, "data": data, "scale": scale, "run": context.get("run"),
                       "stage": f"{kind}/{Path(out).name}", "inputs": stages}}  # fmt: skip
