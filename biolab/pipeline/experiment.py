"""An experiment's runs from its command line, expanded in one place: every dataset of ``datasets``
(or the ``data`` group's choice) x every sweep variant (``people`` x ``models`` x ``exposures``), each
run with every preset of ``probes``, planned by biolab.pipeline.plan.plan_runs (which also expands a
finetune ``grid``). scripts/run.py, the tests and the notebooks all plan experiments through here.

Hydra composes the run config once per (dataset, variant) and once per probe preset: a data preset
inherits from others through its defaults list, which only Hydra's composition resolves.
"""

from __future__ import annotations

from collections.abc import Callable

from omegaconf import OmegaConf
from omegaconf.errors import InterpolationResolutionError

from biolab.cli import compose, config_groups
from biolab.errors import ConfigError
from biolab.pipeline.plan import (
    PlannedRun,
    check_run_names,
    plan_runs,
    preset_names,
    run_overrides,
    sweep_variants,
)

Compose = Callable[[list[str]], object]  # overrides -> the composed ``run`` config


def expand_experiment(cfg, task: list[str], data_choice: str, compose_run: Compose) -> list[PlannedRun]:
    """The runs of the composed ``run`` config ``cfg``, composed from the command-line overrides
    ``task`` (``data_choice``: the data group's choice); ``compose_run`` composes ``run`` with other
    overrides (inside a Hydra app, Hydra's own compose; elsewhere biolab.cli.compose)."""
    cfg = plain(cfg)
    groups = config_groups()
    overrides = [o for o in task if not o.startswith(("data=", "probe="))]
    # data=X on the command line (a sweep over data=a,b) wins over the experiment's list
    explicit = any(o.startswith("data=") for o in task)
    datasets = [data_choice] if explicit or not cfg["datasets"] else preset_names(cfg["datasets"], "datasets",
                                                                                 groups["data"])  # fmt: skip
    if not datasets:
        raise ConfigError("datasets is empty")
    variants = sweep_variants(cfg["people"], cfg["models"], cfg["exposures"])
    probes = {
        name: plain(compose_run([*overrides, f"probe={name}"]))["probe"]
        for name in preset_names(cfg["probes"], "probes", groups["probe"])
    }
    named = run_overrides(task)
    runs = []
    for name in datasets:
        for variant, extra in variants:
            composed = plain(compose_run([*overrides, f"data={name}", *extra]))
            runs += plan_runs(composed, probes, named, variant)
    check_run_names(runs)
    return runs


def plan_experiment(overrides: list[str]) -> list[PlannedRun]:
    """The runs ``python scripts/run.py OVERRIDES`` builds, planned without building anything."""
    composed = compose("run", list(overrides), hydra=True)
    choice = composed.hydra.runtime.choices["data"]
    return expand_experiment(composed, list(overrides), choice, lambda extra: compose("run", extra))


def plain(cfg) -> dict:
    """A composed config as plain containers, interpolations resolved (the hydra node left out)."""
    if OmegaConf.is_config(cfg):
        cfg = OmegaConf.to_container(cfg, resolve=False)
    cfg = {k: v for k, v in cfg.items() if k != "hydra"}
    try:
        return OmegaConf.to_container(OmegaConf.create(cfg), resolve=True)
    except InterpolationResolutionError as err:
        # an experiment's per-scale table (cap_fig1's cap.<scale>) without the scale asked for
        scale, why = cfg.get("scale"), str(err.msg).strip().splitlines()[0]
        hint = f" (it has no settings for scale={scale})" if scale and f".{scale}." in why else ""
        raise ConfigError(f"experiment={cfg.get('experiment')}: {err.full_key}: {why}{hint}") from None
