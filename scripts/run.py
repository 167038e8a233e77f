"""Run an experiment's whole pipeline through the stage cache: python scripts/run.py --help"""

import fcntl

from hydra import compose
from hydra.core.hydra_config import HydraConfig

from biolab.cli import hydra_main
from biolab.pipeline.cache import check_root
from biolab.pipeline.claims import claim_runs
from biolab.pipeline.experiment import expand_experiment
from biolab.pipeline.runner import check_jobs, run_experiment
from biolab.report.write import write_report


@hydra_main("run", renamed={"tasks32": "manipulation"})
def main(cfg) -> None:
    """Generate, tokenize, pretrain, finetune + evaluate, probe; reuse every finished stage.

    python scripts/run.py experiment=demo        (the README's main job, about 9 minutes on 2 CPU cores)
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
    check_jobs(cfg.jobs)
    choice = HydraConfig.get().runtime.choices["data"]
    runs = expand_experiment(cfg, task, choice, lambda extra: compose(config_name="run", overrides=extra))
    root = check_root(cfg.root)
    with claim_runs(runs, root, _replace_flag(cfg)):
        run_experiment(runs, root, cfg.progress, jobs=cfg.jobs, strict=cfg.strict, verbose=cfg.verbose)
    if cfg.report:
        # Jobs of a sweep each end with the report: one at a time, the last one sees every run.
        with open(root / ".report.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            report = write_report(root, experiments=cfg.experiment)
        print(report.read_text())


def _replace_flag(cfg) -> str | None:
    """None when filed runs may be replaced; else how to say so."""
    return None if cfg.replace_runs else "replace_runs=true"


if __name__ == "__main__":
    main()
