import io
import json
import re
import sys
import time

import pytest

from biolab.console import report_progress
from biolab.pipeline import runner
from biolab.pipeline.cache import Stage
from biolab.pipeline.plan import PlannedRun, run_overrides
from biolab.pipeline.runner import build_run, run_experiment, spread_shared_pretraining
from biolab.stages.kind import Kind
from biolab.stages.manifest import RunManifest
from biolab.status import write_status

BANNER = "wandb: Tracking run with wandb version 0.31.0"


def train_like(cfg, inputs, out, progress, context):
    """A pretraining in miniature: a library banner, a step report per step, a final loss."""
    print(BANNER)
    out.mkdir(parents=True, exist_ok=True)
    for step in range(cfg["steps"] + 1):
        report_progress(step, cfg["steps"], loss=1.0, tokens_per_s=100.0)
    (out / "model").write_text("x")
    write_status(out, "done", time.time(), final={"loss": 0.5})


TRAIN_LIKE = Kind("pretrain", ("model",), train_like, resumable=True)


def fake_run(name: str, seed: int) -> PlannedRun:
    stage = Stage(TRAIN_LIKE, {"steps": 10, "seed": seed})
    return PlannedRun(RunManifest("demo", name, name, {"pretrain": stage.rel()}, scale="tiny"), [stage])


def test_a_run_sends_its_messages_and_progress_as_board_events(tmp_path, capfd):
    events = []
    build_run(fake_run("a", 0), tmp_path, events.append)
    messages = [e["message"] for e in events if "message" in e]
    assert messages[0] == "== demo / a (tiny)" and messages[1].endswith("pretrain: building")
    assert re.search(r"pretrain: done in \d+ s: loss 0.500$", messages[-1])
    assert {"run": "a", "stage": "pretrain", "state": "building"} in events
    steps = [e["step"] for e in events if "step" in e]
    assert steps[0] == 0 and steps[-1] == 10 and events[-1] == {"run": "a", "end": True}
    assert BANNER not in capfd.readouterr().out
    (log,) = tmp_path.glob("pretrain/*/log.txt")
    assert BANNER in log.read_text()


@pytest.mark.slow  # two spawned workers, each importing torch
def test_workers_report_to_the_parent_which_prints_a_line_per_job(tmp_path, monkeypatch, capfd):
    monkeypatch.setattr(runner, "validate_plan", lambda runs: None)  # the fake kind is no planned kind
    out = io.StringIO()  # not a terminal: plain lines
    monkeypatch.setattr(sys, "stdout", out)
    manifests = run_experiment([fake_run("a", 0), fake_run("b", 1)], tmp_path, jobs=2)
    lines = out.getvalue().splitlines()
    for name in ("a", "b"):
        assert f"[{name}] == demo / {name} (tiny)" in lines
        assert f"[{name}] pretrain 10/10 (100%): loss 1.000, 100 tok/s, finishing" in lines
        assert any(line.startswith(f"[{name}] [pretrain/") and "done in" in line for line in lines)
    assert [json.loads(m.read_text())["run"] for m in manifests] == ["a", "b"]
    assert BANNER not in capfd.readouterr().out  # the workers' output went to their stages' logs
    assert len(list(tmp_path.glob("pretrain/*/log.txt"))) == 2


def test_verbose_does_not_rename_a_run():
    assert run_overrides(["verbose=true", "progress=false", "train.lr=0.001"]) == ["train.lr=0.001"]


def test_runs_sharing_a_pretraining_are_not_started_side_by_side():
    # a finetune grid of two points on each of three datasets: both workers would wait on one pretraining
    runs = [PlannedRun(RunManifest("e", f"r{i}", "d", {"pretrain": f"pretrain/{p}"}), [])
            for i, p in enumerate(("a", "a", "b", "b", "c", "c"))]  # fmt: skip
    runs.append(PlannedRun(RunManifest("e", "r6", "d", {}), []))  # no pretraining: a group of its own
    order = spread_shared_pretraining(runs)
    assert order == [0, 2, 4, 6, 1, 3, 5]
    assert spread_shared_pretraining([]) == []
