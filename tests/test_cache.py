import json
import multiprocessing as mp
import os
import time
from dataclasses import replace

import pytest

from biolab.errors import ConfigError
from biolab.pipeline.cache import Kind, Stage, StageError, check_root, ensure, is_complete
from biolab.pipeline.kinds import CORPUS, DATA
from biolab.status import read_status, write_status


def data_stage(build=None, **cfg):
    kind = DATA if build is None else replace(DATA, build=build)  # same name, same key: a fake build
    return Stage(kind, {"name": "d", "n_people": 10, **cfg})


def corpus_stage(data, build=None):
    kind = CORPUS if build is None else replace(CORPUS, build=build)
    return Stage(kind, {"tokenizer": {"vocab_size": 300}}, {"data": data})


def counting_stage(calls):
    def data(cfg, inputs, out, progress):
        calls.append("data")
        out.mkdir()
        for name in DATA.outputs:
            (out / name).write_text(json.dumps(cfg))

    def corpus(cfg, inputs, out, progress):
        calls.append("corpus")
        assert (inputs["data"] / "meta.json").is_file()  # inputs are built first
        out.mkdir()
        for name in CORPUS.outputs:
            (out / name).write_text("x")

    return corpus_stage(data_stage(data), corpus)


def test_keys_cover_the_config_and_the_inputs_but_not_bookkeeping():
    a = corpus_stage(data_stage())
    assert a.key == corpus_stage(data_stage()).key
    assert corpus_stage(data_stage(n_people=11)).key != a.key  # an input changed
    assert data_stage(wandb="offline").key == data_stage(wandb="disabled").key
    assert a.path("R").as_posix() == f"R/corpus/{a.key}"
    with pytest.raises(ConfigError, match="Kind record"):
        Stage("train", {})


def test_a_complete_stage_is_reused_and_a_damaged_one_rebuilt(tmp_path):
    calls, logs = [], []
    stage = counting_stage(calls)
    ensure(stage, tmp_path, logs.append)
    assert calls == ["data", "corpus"] and is_complete(stage, tmp_path)
    ensure(stage, tmp_path, logs.append)
    assert calls == ["data", "corpus"]
    path = stage.path(tmp_path)
    assert (path / "config.yaml").is_file() and read_status(path)["status"] == "done"
    (path / "bios.npz").unlink()  # deleted by hand
    ensure(stage, tmp_path, logs.append)
    assert calls == ["data", "corpus", "corpus"] and any("outputs missing" in m for m in logs)
    assert not list(path.glob(".partial-*"))


def test_a_failing_stage_is_marked_failed_and_leaves_no_outputs(tmp_path):
    def data(cfg, inputs, out, progress):
        out.mkdir()
        (out / "meta.json").write_text("{}")
        raise RuntimeError("boom")

    stage = data_stage(data)
    with pytest.raises(RuntimeError, match="boom"):
        ensure(stage, tmp_path, lambda m: None)
    status = read_status(stage.path(tmp_path))
    assert status["status"] == "failed" and "boom" in status["error"]
    assert not (stage.path(tmp_path) / "meta.json").exists() and not is_complete(stage, tmp_path)


def test_a_builder_that_forgets_an_output_fails(tmp_path):
    def data(cfg, inputs, out, progress):
        out.mkdir()
        (out / "meta.json").write_text("{}")

    with pytest.raises(StageError, match="without"):
        ensure(data_stage(data), tmp_path, lambda m: None)


def _build_slowly(root, marker):
    def data(cfg, inputs, out, progress):
        with open(marker, "a") as f:
            f.write("built\n")
        time.sleep(0.5)
        out.mkdir()
        for name in DATA.outputs:
            (out / name).write_text("{}")

    ensure(data_stage(data), root, lambda m: None)


def test_two_jobs_claiming_one_stage_build_it_once(tmp_path):
    marker = tmp_path / "marker"
    ctx = mp.get_context("fork")
    jobs = [ctx.Process(target=_build_slowly, args=(tmp_path / "root", marker)) for _ in range(2)]
    for j in jobs:
        j.start()
    for j in jobs:
        j.join(30)
    assert [j.exitcode for j in jobs] == [0, 0]
    assert marker.read_text() == "built\n"


def test_an_unwritable_root_is_refused(tmp_path):
    if os.geteuid() == 0:
        with pytest.raises(ConfigError, match="not writable"):
            check_root("/proc/biolab-root")
    else:
        ro = tmp_path / "ro"
        ro.mkdir(mode=0o500)
        with pytest.raises(ConfigError, match="not writable"):
            check_root(ro / "root")
    assert check_root(tmp_path / "new") == tmp_path / "new"


def test_a_root_without_free_space_is_refused(tmp_path, monkeypatch):
    import biolab.pipeline.cache

    monkeypatch.setattr(biolab.pipeline.cache, "MIN_FREE_BYTES", 2**62)
    with pytest.raises(ConfigError, match="MiB free"):
        check_root(tmp_path)


def test_the_runner_keeps_what_the_stage_wrote_into_its_status(tmp_path):
    def build(cfg, inputs, out, progress):  # a resumable stage writes its own status, like train()
        out.mkdir(parents=True, exist_ok=True)
        (out / "probes.csv").write_text("x\n")
        write_status(out, "done", time.time(), final={"loss": 1.5}, params_no_embeddings=7)
        return {"rows": 3}

    stage = Stage(Kind("probe", ("probes.csv",), build, resumable=True), {"probe": {}})
    ensure(stage, tmp_path, lambda m: None)
    status = read_status(stage.path(tmp_path))
    assert status["status"] == "done" and status["rows"] == 3
    assert status["final"] == {"loss": 1.5} and status["params_no_embeddings"] == 7


def test_a_failed_write_keeps_its_error_and_a_later_done_drops_it(tmp_path):
    write_status(tmp_path, "failed", time.time(), error="boom", steps=2)
    assert read_status(tmp_path)["error"] == "boom"
    write_status(tmp_path, "done", time.time())
    status = read_status(tmp_path)
    assert "error" not in status and status["steps"] == 2 and status["status"] == "done"
    with pytest.raises(ValueError, match="status must be"):
        write_status(tmp_path, "finished", time.time())
