"""Issue 27, part C: nothing a user owns is destroyed by the pipeline, the report or an atomic write.
One stage never breaks the report; logging keys never rename a run; workers die with their parent;
a killed run's leftovers are cleaned safely; files keep the user's umask; bad sweep values stop early."""

import json
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
from omegaconf import OmegaConf
from test_scripts import run_all

from biolab.cli import compose
from biolab.errors import ConfigError
from biolab.io import atomic_dir, atomic_write_text, clean_leftovers
from biolab.pipeline.cache import Stage, ensure
from biolab.pipeline.plan import plan_runs, preset_names, run_name, run_overrides, sweep_variants
from biolab.pipeline.runner import check_jobs, run_experiment, watch_parent
from biolab.report.capacity import model_table, peak_table
from biolab.report.write import build_report
from biolab.stages.data import DATA
from biolab.stages.kind import is_volatile
from biolab.stages.manifest import load_runs

# a capacity.json row as the capacity stage writes it (bioS_single, 40 people, a tiny model)
CAP_ROW = {"quant": "fp32", "style": "bioS", "N": 40, "log2_N0": 27.25, "log2_S0": 48.18, "people_read": 40,
           "P": 900992, "p1": 24.78, "p2": 120.7, "name_bits": 0.0, "value_bits": 0.0, "diversity_bits": 0.0,
           "bits": 0.0, "R": 0.0, "R_max": 0.0031}  # fmt: skip


def add_capacity_run(root, experiment, rows, exposures=None):
    """File a run of ``experiment`` reusing the fake root's bioS_single stages plus a done capacity stage
    holding ``rows`` (``exposures``: None as for a model trained for train.steps)."""
    demo = json.loads((root / "runs" / "demo" / "bioS_single.json").read_text())
    folder = root / "capacity" / f"fake-{experiment}"
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text("kind: capacity\n")
    (folder / "status.json").write_text(json.dumps({"status": "done", "seconds": 1.0}))
    (folder / "capacity.json").write_text(json.dumps({"exposures": exposures, "trained": None, "rows": rows}))
    stages = {k: demo["stages"][k] for k in ("data", "corpus", "pretrain")}
    manifest = {**demo, "experiment": experiment, "stages": {**stages, "probe": {},
                "capacity": folder.relative_to(root).as_posix()}}  # fmt: skip
    (root / "runs" / experiment).mkdir(parents=True)
    (root / "runs" / experiment / "bioS_single.json").write_text(json.dumps(manifest))


# --- case 1: one capacity stage breaks the whole root's report ---


def test_a_model_trained_without_exposures_is_tabled_as_unset():
    """run.py qa_eval=none probes=[] capacity.enabled=true without exposures: TypeError before."""
    record = {**CAP_ROW, "experiment": "x", "run": "r", "data": "bioS_single", "model": "tiny",
              "arch": "gpt_neox", "exposures": None, "exposures_asked": None}  # fmt: skip
    table = model_table([record])
    assert "| bioS_single | 40 | unset | tiny | 900,992 |" in table
    assert "| bioS_single | 40 | unset | tiny | 1 | 0.000 (tiny) | n/a |" in peak_table([record])


def test_one_unformattable_capacity_stage_costs_only_its_own_rows(fake_root):
    add_capacity_run(fake_root, "cap_good", [CAP_ROW], exposures=2.0)
    add_capacity_run(fake_root, "cap_bad", [{**CAP_ROW, "bits": None, "R": "x", "R_max": 0}])
    md, report = build_report(fake_root)
    text = md.read_text()
    # the other experiments' tables are all written
    assert "## Experiment `demo`" in text and "### QA exact match, mean over attributes" in text
    assert "| bioS_single | 40 | 2 | tiny | 900,992 | 0 (2,793) | 0.000 | 0.00 |" in text
    bad = text[text.index("## Experiment `cap_bad`") :]
    assert "| bioS_single | 40 | unset | tiny | missing (TypeError:" in bad
    assert (md.parent / "results.csv").is_file() and (md.parent / "capacity.csv").is_file()


def test_a_section_or_figure_that_cannot_be_drawn_is_a_note_not_a_crash(fake_root, monkeypatch):
    import biolab.report.markdown as markdown
    import biolab.report.write as write

    def broken(*args):
        raise TypeError("unsupported format string passed to NoneType.__format__")

    monkeypatch.setattr(markdown, "provenance_table", broken)
    monkeypatch.setattr(write, "plot_qa_vs_paper", broken)
    md, report = build_report(fake_root)
    text = md.read_text()
    assert "### QA exact match on P_test, per attribute" in text
    assert "### Provenance table: missing (TypeError: unsupported format string" in text
    assert any("the QA figure could not be drawn" in n for n in report.notes)
    assert any("demo: the provenance table could not be written" in n for n in report.notes)


def test_a_run_whose_files_have_an_odd_shape_is_a_note(fake_root):
    add_capacity_run(fake_root, "cap_odd", [["not", "a", "record"]])
    md, report = build_report(fake_root)
    assert any("numbers could not be read: missing (AttributeError" in n for n in report.notes)
    assert "## Experiment `demo`" in md.read_text()
    shutil.rmtree(fake_root / "report")


# --- case 6: bad sweep values, jobs and datasets refused in one line before any work ---


@pytest.mark.parametrize("people, exposures, match", [
    ([0], None, "people must list integers >= 1, got 0"),
    (None, [0], "exposures must list integers >= 1, got 0"),
    ([-5], None, "people must list integers >= 1, got -5"),
    ([100, 1.5], None, "people must list integers >= 1, got 1.5"),
    (None, [True], "exposures must list integers >= 1, got True"),
])  # fmt: skip
def test_sweep_lists_hold_only_positive_integers(people, exposures, match):
    with pytest.raises(ConfigError, match=re.escape(match)):
        sweep_variants(people, None, exposures)


@pytest.mark.parametrize("jobs", [0, -3, 1.5, True, "2"])
def test_jobs_is_a_positive_integer(jobs, tmp_path):
    with pytest.raises(ConfigError, match="jobs must be an integer >= 1"):
        check_jobs(jobs)
    with pytest.raises(ConfigError, match="jobs must be an integer >= 1"):
        run_experiment([], tmp_path / "root", jobs=jobs)
    assert not (tmp_path / "root").exists()


def test_a_single_preset_name_is_a_one_item_list():
    assert preset_names("bioS_single", "datasets", ["bioS_single", "bioS_multi5"]) == ["bioS_single"]
    with pytest.raises(ConfigError, match="datasets: unknown preset 'b'; choose from: bioS_single"):
        preset_names(["b"], "datasets", ["bioS_single"])
    with pytest.raises(ConfigError, match="datasets must be a preset name or a list of them"):
        preset_names({"a": 1}, "datasets", ["bioS_single"])


@pytest.mark.slow
def test_run_py_refuses_bad_values_in_one_line_before_any_work(tmp_path):
    bad = {"people=[0]": "people must list", "exposures=[0]": "exposures must list", "jobs=0": "jobs must be",
           "jobs=-3": "jobs must be", "datasets=[nope]": "datasets: unknown preset 'nope'"}  # fmt: skip
    roots = [tmp_path / str(i) for i in range(len(bad))]
    calls = [(["run.py", arg, "qa_eval=none", "probes=[]", f"root={root}"], tmp_path)
             for arg, root in zip(bad, roots, strict=True)]  # fmt: skip
    for (arg, want), root, r in zip(bad.items(), roots, run_all(calls), strict=True):
        assert r.returncode == 2 and r.stderr.startswith(f"error: {want}"), (arg, r.stderr[-500:])
        assert r.stderr.count("\n") == 1 and not root.exists()


# --- case 2: same run, two names ---

LOGGING = ["train.wandb=disabled", "finetune.train.wandb=disabled", "train.log_every=5", "progress=false",
           "+finetune.train.keep_ckpts=3"]  # fmt: skip


def test_logging_keys_name_no_run_and_change_no_stage():
    assert run_overrides([*LOGGING, "finetune.train.lr=1e-3"]) == ["finetune.train.lr=0.001"]
    assert run_name("bioS_single", run_overrides(LOGGING)) == "bioS_single"
    plain = plan_runs(OmegaConf.to_container(compose("run", ["qa_eval=direct"]), resolve=True))
    logged = OmegaConf.to_container(compose("run", ["qa_eval=direct", *LOGGING[:3]]), resolve=True)
    assert plan_runs(logged, named=run_overrides(LOGGING))[0].manifest.stages == plain[0].manifest.stages
    assert all(is_volatile(o.lstrip("+").split("=")[0]) for o in LOGGING)


def test_a_run_filed_under_an_older_name_with_logging_keys_is_listed_once(fake_root):
    folder = fake_root / "runs" / "demo"
    m = json.loads((folder / "bioS_single.json").read_text())
    (folder / "bioS_single.json").write_text(json.dumps({**m, "overrides": []}))
    old = {**m, "run": "bioS_single__train.wandb=disabled", "overrides": ["train.wandb=disabled"]}
    (folder / f"{old['run']}.json").write_text(json.dumps(old))
    other = {**m, "run": "bioS_single__paper.qa=x", "overrides": ["paper.qa=x"]}  # another run: kept
    (folder / f"{other['run']}.json").write_text(json.dumps(other))
    names = [r.name for r in load_runs(fake_root)]
    assert names.count("bioS_single") == 1 and "bioS_single__train.wandb=disabled" not in names
    assert "bioS_single__paper.qa=x" in names and (folder / f"{old['run']}.json").is_file()


# --- case 5: atomic writes keep the user's umask ---


@pytest.fixture
def umask():
    def set_mask(mask):
        os.umask(mask)

    old = os.umask(0o022)
    yield set_mask
    os.umask(old)


def mode(path):
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize("mask", [0o022, 0o002])
def test_atomic_writes_get_the_mode_open_and_mkdir_give(tmp_path, umask, mask):
    umask(mask)
    atomic_write_text(tmp_path / "a.txt", "x")
    with atomic_dir(tmp_path / "out") as tmp:
        (tmp / "b.txt").write_text("y")
    (tmp_path / "sibling.txt").write_text("z")
    assert mode(tmp_path / "a.txt") == mode(tmp_path / "sibling.txt") == 0o666 & ~mask
    assert mode(tmp_path / "out") == 0o777 & ~mask


def test_a_stage_folder_and_the_report_are_readable_to_the_group(tmp_path, umask, fake_root):
    umask(0o022)
    stage = data_stage(lambda cfg, inputs, out, progress, context: fill(out, DATA.outputs))
    path = ensure(stage, tmp_path, lambda m: None)
    assert {mode(path / n) for n in ("status.json", "config.yaml", *DATA.outputs)} == {0o644}
    md, _ = build_report(fake_root)
    assert mode(md) == 0o644 and mode(md.parent) == 0o755


def fill(out, names):
    out.mkdir()
    for name in names:
        (out / name).write_text("x")


def data_stage(build):
    return Stage(replace(DATA, build=build), {"name": "d", "n_people": 10})


# --- case 4: leftovers of killed runs are cleaned by the next run, never a live writer's ---

HOLD = """
import sys, time
from biolab.io import atomic_dir
with atomic_dir(sys.argv[1]) as tmp:
    (tmp / "half.txt").write_text("x")
    print(tmp, flush=True)
    time.sleep(60)
"""


def test_a_killed_atomic_dir_is_cleaned_by_the_next_and_a_live_one_left(tmp_path):
    out = tmp_path / "report"
    writer = subprocess.Popen([sys.executable, "-c", HOLD, str(out)], stdout=subprocess.PIPE, text=True)
    try:
        live = Path(writer.stdout.readline().strip())
        assert live.name.startswith(".report.tmp-") and live.is_dir()
        assert clean_leftovers(out) == [] and live.is_dir()  # its writer is alive: left alone
    finally:
        writer.kill()
        writer.wait(timeout=30)
    (tmp_path / ".report.tmp-k2j3h_x8").mkdir()  # left by a killed run of the code before locks
    with atomic_dir(out) as tmp:
        (tmp / "report.md").write_text("new")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report"]


def test_an_out_moved_aside_by_a_killed_swap_is_put_back(tmp_path):
    out = tmp_path / "data"
    aside = tmp_path / ".data.old-abc123" / "data"
    aside.mkdir(parents=True)
    (aside / "people.jsonl").write_text("mine")
    with pytest.raises(ConfigError, match="not empty; pass overwrite=true"):
        with atomic_dir(out):
            pass
    assert (out / "people.jsonl").read_text() == "mine" and sorted(os.listdir(tmp_path)) == ["data"]


def test_a_stage_cleans_what_a_killed_build_left_in_its_folder(tmp_path):
    stage = data_stage(lambda cfg, inputs, out, progress, context: fill(out, DATA.outputs))
    path = stage.path(tmp_path)
    (path / ".partial-abc123" / "out").mkdir(parents=True)
    (path / ".status.json.3f2a.tmp").write_text("{")
    ensure(stage, tmp_path, lambda m: None)
    assert not [p.name for p in path.iterdir() if p.name.startswith(".")]
    (path / ".partial-def456").mkdir()
    ensure(stage, tmp_path, lambda m: None)  # reused: cleaned all the same
    assert not (path / ".partial-def456").exists()


# --- case 3: a worker dies with its parent ---

DRIVER = """
import os, sys, time
from dataclasses import replace
from pathlib import Path
from biolab import stages
from biolab.pipeline.cache import Stage
from biolab.stages.data import DATA
from biolab.pipeline.plan import PlannedRun
from biolab.pipeline.runner import run_experiment
from biolab.stages.manifest import RunManifest

def slow(cfg, inputs, out, progress, context):
    Path(sys.argv[2], str(os.getpid())).write_text("")
    time.sleep(120)

SLOW = stages.KINDS[DATA.name] = replace(DATA, build=slow)  # also in each spawned worker

if __name__ == "__main__":
    runs = [PlannedRun(RunManifest("x", f"r{i}", f"d{i}", {}, scale="tiny"),
                       [Stage(SLOW, {"name": f"d{i}", "n_people": 10})]) for i in range(2)]
    run_experiment(runs, sys.argv[1], progress=False, log=lambda m: None, jobs=2)
"""


def alive(pid: int) -> bool:
    """Running (a zombie no init reaps in a container counts as dead)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


def wait_for(check, seconds: float) -> bool:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if check():
            return True
        time.sleep(0.2)
    return check()


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads process states from /proc")
def test_workers_die_when_run_py_is_killed(tmp_path):
    (tmp_path / "driver.py").write_text(DRIVER)
    started = tmp_path / "started"
    started.mkdir()
    args = [sys.executable, str(tmp_path / "driver.py"), str(tmp_path / "root"), str(started)]
    parent = subprocess.Popen(args)
    workers: list[int] = []
    try:
        assert wait_for(lambda: len(os.listdir(started)) == 2, 240), "the two workers never started a stage"
        workers = [int(p) for p in os.listdir(started)]
        parent.kill()  # kill -9: no handler, no cleanup
        parent.wait(timeout=30)
        assert wait_for(lambda: not any(map(alive, workers)), 20), "workers outlived their parent"
    finally:
        parent.kill()
        for pid in workers:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_the_portable_watch_stops_a_worker_whose_parent_is_gone():
    stopped = []
    watch_parent(os.getppid() + 10**6, every=0.01, stop=stopped.append)  # never this process's parent
    assert stopped == [1]
