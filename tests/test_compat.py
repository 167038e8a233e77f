"""Roots built before the restructuring still work: every shipped experiment plans the stage keys it
planned then (so a finished root is reused, not rebuilt), and an old root still reports every number
it reported then (results.csv gained columns after the old ones; report.md gained counts, intervals,
settings and provenance, so it is no longer the old text). The golden files and how they were made:
tests/golden/README.md."""

import csv
import json
import re
import shutil
from pathlib import Path

import pytest

from biolab.cli import CONF_DIR
from biolab.pipeline.experiment import plan_experiment
from biolab.pipeline.plan import PlannedRun, validate_plan
from biolab.report.write import build_report
from biolab.stages.manifest import MANIFESTS, load_runs, stage_slots

GOLDEN = Path(__file__).resolve().parent / "golden"
OLD_ROOT_PATH = "/tmp/toyroot"  # where the old root lived when its report was written


def planned_runs(base: list[str]) -> list[PlannedRun]:
    """The runs scripts/run.py plans for ``base``, every dataset of the experiment."""
    return plan_experiment(base)


EXPERIMENTS = sorted(p.stem for p in (CONF_DIR / "experiment").glob("*.yaml"))
SCALES = sorted(p.stem for p in (CONF_DIR / "scale").glob("*.yaml"))
# Redefined on purpose since the golden was made (its old keys no longer apply): experiment -> why.
REDEFINED = {"demo": "issue 19: 400 people, 10 values per attribute, bf16, with a Q-probe"}


@pytest.mark.slow
@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_shipped_experiment_plans_valid_stages_with_the_keys_of_before(experiment):
    golden = json.loads((GOLDEN / "stage_keys.json").read_text())
    for scale in SCALES:
        runs = planned_runs([f"experiment={experiment}", f"scale={scale}"])
        validate_plan(runs)  # every stage's typed check, as before any work
        runs = [r.manifest for r in runs]
        assert {(r.experiment, r.scale) for r in runs} == {(experiment, scale)}
        assert all(r.paper and any(r.paper.values()) for r in runs)  # each names its paper numbers
        ours = {r.run: r.stages for r in runs}
        # the golden holds the stages as manifests of format 1 filed them (nested): read as they are read
        theirs = {k.split("/", 2)[2]: stage_slots(v) for k, v in golden.items()
                  if k.startswith(f"{experiment}/{scale}/")}  # fmt: skip
        if theirs and experiment not in REDEFINED:  # new experiments and scales have no golden
            assert ours == theirs, f"{experiment} at scale {scale} plans other stage keys than before"


def test_the_golden_still_covers_the_experiments_it_was_made_for():
    golden = json.loads((GOLDEN / "stage_keys.json").read_text())
    made_for = {k.split("/", 1)[0] for k in golden}
    assert made_for - set(REDEFINED) <= set(EXPERIMENTS)
    assert {k.split("/", 2)[1] for k in golden} == {"tiny", "small", "paper"}


def copy_old_root(root: Path) -> None:
    """The golden root, its manifests back under ``runs/`` (kept as ``manifests/`` in git, since a
    ``runs/`` folder anywhere is taken for a run's output and ignored)."""
    shutil.copytree(GOLDEN / "old_root", root)
    (root / "manifests").rename(root / MANIFESTS)


def read_csv(path: Path) -> tuple[list[str], list[dict]]:
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        return list(reader.fieldnames or ()), list(reader)


def test_an_old_root_still_reports_every_number_it_reported(tmp_path):
    root = tmp_path / "root"
    copy_old_root(root)
    runs = load_runs(root)
    assert any(r.task_runs() for r in runs)  # the old manifests' tasks32 entries are read
    md, report = build_report(root)
    assert not report.notes  # a root stripped to its numbers lacks configs and logs: nothing is missing
    old_header, old_rows = read_csv(GOLDEN / "old_root_results.csv")
    header, rows = read_csv(md.parent / "results.csv")
    assert header[: len(old_header)] == old_header  # new columns only after the old ones
    assert [{k: r[k] for k in old_header} for r in rows] == old_rows
    text = md.read_text(encoding="utf-8")
    assert all(run.name in text for run in runs)
    old_text = (GOLDEN / "old_root_report.md").read_text(encoding="utf-8")
    assert set(re.findall(r"^#+ .*$", old_text, flags=re.M)) <= set(re.findall(r"^#+ .*$", text, flags=re.M))


def test_an_old_roots_counts_come_from_its_files(tmp_path):
    root = tmp_path / "root"
    copy_old_root(root)
    _, rows = read_csv(build_report(root)[0].parent / "results.csv")

    def n(**where):
        hits = [r for r in rows if all(r[k] == v for k, v in where.items())]
        assert len(hits) == 1, where
        return hits[0]["n"], bool(hits[0]["ci_low"])

    demo = dict(experiment="demo", run="bioS_single", split="test")
    assert n(**demo, metric="qa_exact_match", attribute="mean") == ("72", True)  # 72 questions
    assert n(**demo, metric="qa_majority", attribute="major") == ("12", True)  # 12 people
    assert n(**demo, metric="pprobe_first_token_acc", attribute="major", position="s0") == ("12", True)
    p32 = dict(experiment="p32_manipulation", split="test")
    assert n(**p32, metric="task_answer", task="birth_to_first__ft") == ("12", True)
    assert n(**p32, metric="task_items", task="birth_to_first__ft") == ("", False)  # a count
    assert n(**p32, metric="task_shared_queries", task="birth_to_first__ft") == ("12", False)
    assert n(**p32, metric="bio_completion", attribute="mean") == ("72", True)  # 12 bios x 6
    assert n(**p32, metric="verbatim_exact") == ("12", True)
    assert n(**p32, metric="verbatim_prefix_frac") == ("12", False)  # a mean of fractions
