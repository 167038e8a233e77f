"""Run an experiment's whole pipeline through the stage cache: python scripts/run.py --help"""

import fcntl

from hydra import compose
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf

from biolab.cli import config_groups, hydra_main
from biolab.errors import ConfigError
from biolab.pipeline.cache import check_root
from biolab.pipeline.claims import claim_runs
from biolab.pipeline.plan import check_run_names, plan_runs, preset_names, run_overrides, sweep_variants
from biolab.pipeline.runner import check_jobs, run_experiment
from biolab.report.write import write_report


def _compose(base_overrides: list[str], extra: list[str]) -> dict:
    cfg = compose(config_name="run", overrides=[*base_overrides, *extra])
    return OmegaConf.to_container(cfg, resolve=True)


@hydra_main("run", renamed={"tasks32": "manipulation"})
def main(cfg) -> None:
    """Generate, tokenize, pretrain, finetune + evaluate, probe; reuse every finished stage.

    python scripts/run.py experiment=demo                    (the README's main job, about 9 minutes on 2 CPU cores)
    python scripts/run.py experiment=fig3_augmentation scale=small root=/data/biolab
    python scripts/run.py -m data=bioS_single,bioS_multi5 experiment=fig5_pprobe   (a sweep)
    python scripts/run.py experiment=p32_inverse_search 'manipulation.tasks=[bdate_to_first]'  (Part 3.2;
    also p32_memorization, p32_manipulation; keys under manipulation and memorization)
    Stages land in ROOT/<stage>/<hash>/, manifests in ROOT/runs/<experiment>/, the report in ROOT/report.
    A run is named after its dataset and the overrides that shape it (bioS_single__finetune.train.lr=0.001);
    one filed under that name with other stages stops the command (replace_runs=true replaces it).
    Re-running the same command resumes: finished stages are reused, pretraining continues from its
    last checkpoint.
    """
    task = list(HydraConfig.get().overrides.task)
    overrides = [o for o in task if not o.startswith(("data=", "probe="))]
    chosen = HydraConfig.get().runtime.choices["data"]
    check_jobs(cfg.jobs)
    groups = config_groups()
    # data=X on the command line (a sweep over data=a,b) wins over the experiment's list.
    explicit = any(o.startswith("data=") for o in task)
    datasets = [chosen] if explicit or not cfg.datasets else preset_names(_plain(cfg.datasets), "datasets",
                                                                          groups["data"])  # fmt: skip
    if not datasets:
        raise ConfigError("datasets is empty")
    variants = sweep_variants(_plain(cfg.people), _plain(cfg.models), _plain(cfg.exposures))
    probes = {}
    for name in preset_names(_plain(cfg.probes), "probes", groups["probe"]):
        probes[name] = _compose(overrides, [f"probe={name}"])["probe"]
    named = run_overrides(task)
    runs = []
    for name in datasets:
        for variant, extra in variants:
            runs += plan_runs(_compose(overrides, [f"data={name}", *extra]), probes, named, variant)
    check_run_names(runs)
    root = check_root(cfg.root)
    with claim_runs(runs, root, _replace_flag(cfg)):
        run_experiment(runs, root, cfg.progress, jobs=cfg.jobs, strict=cfg.strict, verbose=cfg.verbose)
    if cfg.report:
        # Jobs of a sweep each end with the report: one at a time, the last one sees every run.
        with open(root / ".report.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            report = write_report(root, experiments=cfg.experiment)
        print(report.read_text())


def _plain(value):
    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value


def _replace_flag(cfg) -> str | None:
    """None when filed runs may be replaced; else how to say so."""
    return None if cfg.replace_runs else "replace_runs=true"


if __name__ == "__main__":
    main()
