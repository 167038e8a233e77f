"""scripts/collect.py copies a report only when it covers exactly the experiments collected and is
newer than their runs (scripts/run.py reports only its own experiment into ROOT/report), and never
replaces a folder that is not an earlier collection."""

import json
import os
from pathlib import Path

from conftest import build_fake_root, run_in_fork

from biolab.report.write import write_report

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "collect.py"


def collect(*args):
    return run_in_fork([SCRIPT, *map(str, args), "--command", "python scripts/run.py experiment=demo"])


def test_collect_refuses_a_report_of_other_experiments_then_copies_the_right_one(fake_root, tmp_path):
    build_fake_root(fake_root, experiment="other", datasets=["bioS_single"], heatmaps=[], probes=False)
    write_report(fake_root, experiments="demo")  # what run.py experiment=demo leaves in ROOT/report
    out = tmp_path / "results" / "demo"
    res = collect(fake_root, out)
    assert res.returncode != 0 and "lacks other" in res.stderr and not out.exists()
    res = collect(fake_root, out, "--experiments", "demo", "other")
    assert res.returncode != 0 and "lacks other" in res.stderr
    res = collect(fake_root, out, "--experiments", "demo")
    assert res.returncode == 0, res.stderr
    assert {p.name for p in out.iterdir()} >= {"report.md", "results.csv", "provenance.json"}
    stages = json.loads((out / "provenance.json").read_text())["stages"]
    demo = {
        f
        for m in (fake_root / "runs" / "demo").glob("*.json")
        for f in json.loads(m.read_text())["stages"].values()
    }
    assert set(stages) == demo  # the stages of the runs collected, not the root's others

    elsewhere = tmp_path / "report_all"
    write_report(fake_root, out=elsewhere)
    res = collect(fake_root, out, "--report", elsewhere)
    assert res.returncode != 0 and "pass --replace" in res.stderr
    res = collect(fake_root, out, "--report", elsewhere, "--replace")
    assert res.returncode == 0, res.stderr
    assert "other" in (out / "results.csv").read_text()


def test_collect_refuses_a_stale_report_and_a_foreign_folder(fake_root, tmp_path):
    write_report(fake_root)
    manifest = next((fake_root / "runs" / "demo").glob("*.json"))
    later = (fake_root / "report" / "report.md").stat().st_mtime + 10
    os.utime(manifest, (later, later))  # a run filed after the report
    res = collect(fake_root, tmp_path / "new")
    assert res.returncode != 0 and "filed after" in res.stderr

    os.utime(manifest, (later - 100, later - 100))
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    res = collect(fake_root, mine, "--replace")
    assert res.returncode != 0 and "not a results folder" in res.stderr
    assert (mine / "notes.txt").read_text() == "keep"
