"""Run manifests: one flat shape of ``stages`` whatever format filed it, a round trip through the
file, slot names that cannot collide, and the readers registered for the report."""

import json
from pathlib import Path

import pytest

from biolab.errors import ConfigError, ReportError
from biolab.pipeline.claims import name_clash
from biolab.stages import READERS
from biolab.stages.manifest import Run, RunManifest, drop_renamed, load_runs, slot, stage_slots

# a manifest as the first format filed it: a string, a {preset: folder} dict and a nested dict per slot
OLD = {
    "experiment": "p32", "run": "bioS_single", "data": "bioS_single", "scale": "tiny", "overrides": [],
    "stages": {"data": "data/a", "corpus": "corpus/b", "pretrain": "pretrain/c", "eval": "finetune/d",
               "probe": {"p_fast": "probe/e", "q_fast": "probe/f"}, "memorization": "memorization/g",
               "tasks32": {"birth_day__ft": {"tasks": "tasks/h", "train": "task_finetune/i",
                                             "eval": "task_eval/j"}}},
    "tasks32": {"birth_day__ft": {"task": "birth_day", "mode": "finetune"}},
}  # fmt: skip
FLAT = {"data": "data/a", "corpus": "corpus/b", "pretrain": "pretrain/c", "eval": "finetune/d",
        "probe/p_fast": "probe/e", "probe/q_fast": "probe/f", "memorization": "memorization/g",
        "manipulation/birth_day__ft/tasks": "tasks/h", "manipulation/birth_day__ft/train": "task_finetune/i",
        "manipulation/birth_day__ft/eval": "task_eval/j"}  # fmt: skip


def test_an_old_manifest_reads_into_one_flat_map_of_slots():
    m = RunManifest.from_dict(OLD)
    assert m.stages == FLAT and list(m.stages) == list(FLAT)  # the order filed
    assert m.probes() == {"p_fast": "probe/e", "q_fast": "probe/f"}
    assert m.task_runs() == {"birth_day__ft": {"task": "birth_day", "mode": "finetune", "stages": {
        "tasks": "tasks/h", "train": "task_finetune/i", "eval": "task_eval/j"}}}  # fmt: skip
    assert m.folder("eval") == "finetune/d" and m.folder("capacity") is None


def test_a_manifest_round_trips_through_its_file_in_the_current_format():
    m = RunManifest.from_dict(OLD)
    filed = json.loads(json.dumps(m.to_dict()))
    assert filed["format"] == 2 and filed["stages"] == FLAT and "manipulation" in filed
    assert RunManifest.from_dict(filed) == m
    assert "manipulation" not in RunManifest("e", "r", "d", {"data": "data/a"}).to_dict()  # no tasks, no key


def test_empty_entries_name_no_stage_and_a_non_folder_is_refused():
    assert stage_slots({"data": "data/a", "probe": {}, "eval": None}) == {"data": "data/a"}
    with pytest.raises(ReportError, match=r"stages.probe.p_fast must be a folder name, got 3"):
        stage_slots({"probe": {"p_fast": 3}}, "x.json")
    with pytest.raises(ReportError, match="manifest lacks stages"):
        RunManifest.from_dict({k: v for k, v in OLD.items() if k != "stages"}, "x.json")


def test_a_slot_part_cannot_hold_the_separator():
    assert slot("probe", "p_fast") == "probe/p_fast"
    with pytest.raises(ConfigError, match="cannot name a stage slot"):
        slot("probe", "a/b")


def test_a_run_filed_in_either_format_is_the_same_run(tmp_path):
    new = RunManifest.from_dict(OLD)
    assert name_clash(new, OLD["stages"]) == ""  # claims compare slots, not formats
    other = RunManifest.from_dict({**OLD, "stages": {**OLD["stages"], "eval": "finetune/z"}})
    assert name_clash(other, OLD["stages"]) == "eval"
    folder = tmp_path / "runs" / "p32"
    folder.mkdir(parents=True)
    (folder / "bioS_single.json").write_text(json.dumps(OLD))
    (folder / "bioS_single__train.wandb=disabled.json").write_text(
        json.dumps({**new.to_dict(), "run": "bioS_single__train.wandb=disabled"})
    )
    runs = load_runs(tmp_path)
    assert [r.name for r in drop_renamed(runs)] == ["bioS_single"]  # one run, listed once


def test_each_reader_reads_the_slots_it_names():
    run = Run(Path("/root"), Path("/root/runs/p32/bioS_single.json"), RunManifest.from_dict(OLD))
    assert [r.slot for r in READERS if r.reads(run)] == ["eval", "probe", "memorization", "manipulation"]
