"""Roots built before the restructuring still work: every shipped experiment plans the stage keys it
planned then (so a finished root is reused, not rebuilt), and an old root's report is the same, byte
for byte. The golden files and how they were made: tests/golden/README.md."""

import json
import shutil
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from biolab.cli import CONF_DIR, compose
from biolab.pipeline.manifest import load_runs
from biolab.pipeline.plan import plan_runs
from biolab.report.write import write_report

GOLDEN = Path(__file__).resolve().parent / "golden"
OLD_ROOT_PATH = "/tmp/toyroot"  # where the old root lived when its report was written


def planned_stages(base: list[str]) -> dict[str, dict]:
    """run name -> its stage folders, as scripts/run.py plans ``base``."""
    cfg = compose("run", base)
    datasets = (
        list(cfg.datasets)
        if cfg.datasets
        else [compose("run", base, hydra=True).hydra.runtime.choices["data"]]
    )
    probes = {
        p: OmegaConf.to_container(compose("run", [*base, f"probe={p}"]).probe, resolve=True)
        for p in cfg.probes
    }
    out = {}
    for d in datasets:
        for run in plan_runs(
            OmegaConf.to_container(compose("run", [*base, f"data={d}"]), resolve=True), probes
        ):
            out[run["run"]] = run["stages"]
    return out


EXPERIMENTS = sorted(p.stem for p in (CONF_DIR / "experiment").glob("*.yaml"))


@pytest.mark.slow
@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_shipped_experiment_plans_the_stage_keys_of_before(experiment):
    golden = json.loads((GOLDEN / "stage_keys.json").read_text())
    for scale in ("tiny", "small", "paper"):
        ours = planned_stages([f"experiment={experiment}", f"scale={scale}"])
        theirs = {k.split("/", 2)[2]: v for k, v in golden.items() if k.startswith(f"{experiment}/{scale}/")}
        assert ours == theirs, f"{experiment} at scale {scale} plans other stage keys than before"


def test_an_old_root_gives_the_same_report_byte_for_byte(tmp_path):
    root = tmp_path / "root"
    shutil.copytree(GOLDEN / "old_root", root)
    assert any(r.task_runs() for r in load_runs(root))  # the old manifests' tasks32 entries are read
    md = write_report(root)
    expected = (GOLDEN / "old_root_report.md").read_text(encoding="utf-8").replace(OLD_ROOT_PATH, "ROOT")
    assert md.read_text(encoding="utf-8").replace(str(root), "ROOT") == expected
    assert (md.parent / "results.csv").read_bytes() == (GOLDEN / "old_root_results.csv").read_bytes()
