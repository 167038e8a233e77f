import json
import multiprocessing as mp
import os
import re
import time
from dataclasses import replace

import pytest

from biolab.console import reporting
from biolab.errors import ConfigError
from biolab.pipeline.cache import Stage, StageError, check_root, ensure, is_complete
from biolab.stages.data import CORPUS, DATA
from biolab.stages.kind import Kind
from biolab.status import read_status, write_status


def data_stage(build=None, **cfg):
    kind = DATA if build is None else replace(DATA, build=build)  # same name, same key: a fake build
    return Stage(kind, {"name": "d", "n_people": 10, **cfg})


def corpus_stage(data, build=None):
    kind = CORPUS if build is None else replace(CORPUS, build=build)
    return Stage(kind, {"tokenizer": {"vocab_size": 300}}, {"data": data})


def counting_stage(calls):
    def data(cfg, inputs, out, progress, context):
        calls.append("data")
        out.mkdir()
        for name in DATA.outputs:
            (out / name).write_text(json.dumps(cfg))

    def corpus(cfg, inputs, out, progress, context):
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
    def data(cfg, inputs, out, progress, context):
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
    def data(cfg, inputs, out, progress, context):
        out.mkdir()
        (out / "meta.json").write_text("{}")

    with pytest.raises(StageError, match="without"):
        ensure(data_stage(data), tmp_path, lambda m: None)


def _build_slowly(root, marker):
    def data(cfg, inputs, out, progress, context):
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
    def build(cfg, inputs, out, progress, context):  # a resumable stage writes its own status, like train()
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


def test_a_stage_whose_bytes_changed_is_damaged_and_rebuilt_or_refused(tmp_path):
    calls, logs = [], []
    stage = counting_stage(calls)
    ensure(stage, tmp_path, logs.append)
    corpus = stage.path(tmp_path)
    assert set(read_status(corpus)["outputs"]) == set(CORPUS.outputs)  # the fake writes each as a file
    (corpus / "bios.bin").write_text("y")  # same size, other bytes
    with pytest.raises(StageError, match=r"damaged: bios.bin changed since the stage finished"):
        ensure(stage, tmp_path, logs.append, strict=True)
    ensure(stage, tmp_path, logs.append)
    assert calls == ["data", "corpus", "corpus"] and any("damaged (bios.bin changed" in m for m in logs)
    with open(stage.inputs["data"].path(tmp_path) / "bios.jsonl", "a") as f:
        f.write("more")  # a damaged input is rebuilt before its consumer is checked
    logs.clear()
    ensure(stage, tmp_path, logs.append)
    assert calls[-1] == "data" and any(re.search(r"bios.jsonl has \d+ bytes, \d+ when", m) for m in logs)


def test_an_unreadable_status_is_a_damaged_stage_not_a_traceback(tmp_path):
    calls, logs = [], []
    stage = counting_stage(calls)
    ensure(stage, tmp_path, logs.append)
    (stage.path(tmp_path) / "status.json").write_text("{not json")
    ensure(stage, tmp_path, logs.append)
    assert calls == ["data", "corpus", "corpus"] and any("status.json is unreadable" in m for m in logs)
    assert read_status(stage.path(tmp_path))["status"] == "done"


def test_a_stage_built_before_fingerprints_is_recorded_once_then_checked(tmp_path):
    calls, logs = [], []
    stage = counting_stage(calls)
    ensure(stage, tmp_path, logs.append)
    path = stage.path(tmp_path)
    old = read_status(path)
    old.pop("outputs")
    (path / "status.json").write_text(json.dumps(old))
    ensure(stage, tmp_path, logs.append)
    status = read_status(path)
    assert calls == ["data", "corpus"] and "outputs" in status and status["started"] == old["started"]
    assert any("fingerprint recorded" in m for m in logs)
    (path / "qa.npz").write_text("")
    ensure(stage, tmp_path, logs.append)
    assert calls == ["data", "corpus", "corpus"]


def test_a_new_file_inside_a_folder_output_is_damage(tmp_path):
    calls, logs = [], []

    def corpus(cfg, inputs, out, progress, context):
        calls.append("corpus")
        for name in CORPUS.outputs:
            target = out / name
            if name == "tokenizer":
                target.mkdir(parents=True)
                (target / "tokenizer.json").write_text("{}")
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text("x")

    stage = corpus_stage(data_stage(counting_stage([]).inputs["data"].spec.build), corpus)
    ensure(stage, tmp_path, logs.append)
    assert "tokenizer/tokenizer.json" in read_status(stage.path(tmp_path))["outputs"]
    (stage.path(tmp_path) / "tokenizer" / "vocab.txt").write_text("stray")
    ensure(stage, tmp_path, logs.append)
    assert calls == ["corpus", "corpus"] and any("tokenizer/vocab.txt appeared" in m for m in logs)


BANNER = "wandb: Tracking run with wandb version 0.31.0"


def noisy_data(cfg, inputs, out, progress, context):
    print(BANNER)
    os.write(2, b"Writing model shards: 100%\n")  # what C code and subprocesses write
    out.mkdir()
    for name in DATA.outputs:
        (out / name).write_text("{}")


def test_a_build_s_output_goes_to_the_stage_log_which_is_not_an_output(tmp_path, capfd):
    logs, sent = [], []
    stage = data_stage(noisy_data)
    with reporting(sent.append):
        ensure(stage, tmp_path, logs.append)
    out, err = capfd.readouterr()
    assert BANNER not in out and "model shards" not in err
    text = (stage.path(tmp_path) / "log.txt").read_text()
    assert BANNER in text and "Writing model shards" in text
    assert sent == [{"stage": "data", "state": "building"}]  # the board's line learns the stage
    ensure(stage, tmp_path, logs.append)
    assert logs[-1].endswith("data: reused")  # log.txt is not fingerprinted: no damage
    shown = data_stage(noisy_data, n_people=11)
    ensure(shown, tmp_path, logs.append, verbose=True)
    assert BANNER in capfd.readouterr().out and not (shown.path(tmp_path) / "log.txt").exists()


def test_a_failed_build_says_where_its_output_is(tmp_path):
    def data(cfg, inputs, out, progress, context):
        print("the library's last words")
        raise RuntimeError("boom")

    logs = []
    stage = data_stage(data)
    with pytest.raises(RuntimeError, match="boom"):
        ensure(stage, tmp_path, logs.append)
    log = stage.path(tmp_path) / "log.txt"
    assert re.fullmatch(rf"\[{stage.rel()}\] data: failed after \d+ s; its output is in {log}", logs[-1])
    assert "the library's last words" in log.read_text()


def test_the_done_message_sums_up_the_loss_and_the_exact_match(tmp_path):
    def finetune(cfg, inputs, out, progress, context):
        (out / "eval").mkdir(parents=True)
        splits = {s: {"exact_match": {"mean": v}} for s, v in (("train", 0.8), ("test", 0.097))}
        (out / "eval" / "metrics.json").write_text(json.dumps({"splits": splits}))
        write_status(out, "done", time.time(), final={"loss": 0.41})

    logs = []
    stage = Stage(Kind("finetune", ("eval/metrics.json",), finetune, resumable=True), {"finetune": {}})
    ensure(stage, tmp_path, logs.append)
    summary = "loss 0.410, QA exact match P_train 80.0%, P_test 9.7%"
    assert re.fullmatch(rf"\[{stage.rel()}\] finetune: done in \d+ s: {summary}", logs[-1]), logs[-1]


TINY = ["experiment=demo", "data=bioS_single", "datasets=[bioS_single]", "data.n_people=24", "train.steps=4",
        "train.batch_size=4", "train.ctx=64", "model.n_layer=1", "model.d_model=32", "model.n_head=2",
        "tokenizer.vocab_size=400", "finetune.train.steps=2", "finetune.train.batch_size=4",
        "probe.linear.epochs=1", "probe.max_positions=4", "progress=false", "train.wandb=disabled",
        "finetune.train.wandb=disabled"]  # fmt: skip


def truncate(path):
    with open(path, "r+b") as f:
        f.truncate(path.stat().st_size // 2)


@pytest.mark.slow
def test_a_real_root_with_truncated_outputs_rebuilds_each_damaged_stage(tmp_path):
    from omegaconf import OmegaConf

    from biolab.cli import compose
    from biolab.pipeline.plan import plan_runs
    from biolab.pipeline.runner import run_experiment

    def plan():
        probe = OmegaConf.to_container(compose("run", [*TINY, "probe=p_fast"]).probe, resolve=True)
        return plan_runs(OmegaConf.to_container(compose("run", TINY), resolve=True), {"p_fast": probe})

    runs = plan()
    (manifest,) = run_experiment(runs, tmp_path, progress=False, log=lambda m: None)
    stages = json.loads(manifest.read_text())["stages"]
    before = json.loads((tmp_path / stages["eval"] / "eval" / "metrics.json").read_text())
    damaged = {"data": "bios.jsonl", "corpus": "bios.bin", "pretrain": "model/model.safetensors",
               "eval": "eval/metrics.json"}  # fmt: skip
    for key, name in damaged.items():
        truncate(tmp_path / stages[key] / name)
    truncate(tmp_path / stages["probe/p_fast"] / "probes.csv")
    logs = []
    with pytest.raises(StageError, match="data is damaged: bios.jsonl has"):
        run_experiment(plan(), tmp_path, progress=False, log=logs.append, strict=True)
    run_experiment(plan(), tmp_path, progress=False, log=logs.append)
    rebuilt = [m.split("] ")[1].split(":")[0] for m in logs if "; rebuilding" in m]
    assert rebuilt == ["data", "corpus", "pretrain", "finetune", "probe"], logs
    after = json.loads((tmp_path / stages["eval"] / "eval" / "metrics.json").read_text())
    assert after["splits"] == before["splits"]  # rebuilt from the same seeds: the same numbers
