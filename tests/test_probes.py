import re

import numpy as np
import pytest

from biolab.data.dataset import DataConfig
from biolab.data.tokens import Corpus, prepare_corpus
from biolab.errors import ConfigError
from biolab.model import ModelConfig
from biolab.probe.linear import LinearProbeConfig
from biolab.probe.probes import COLUMNS, ProbeConfig, read_csv, run_probe
from biolab.probe.tasks import TASKS
from biolab.train.config import TrainConfig
from biolab.train.pretrain import pretrain

LAYERS = 3  # embedding + 2 blocks


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("probe")
    corpus = Corpus(prepare_corpus(root, DataConfig(n_people=40, multi=2, permute=1), vocab_size=600))
    cfg = TrainConfig(
        steps=20, batch_size=8, ctx=64, warmup_steps=2, eval_every=0, ckpt_every=0, wandb="disabled"
    )
    pretrain(root, corpus, ModelConfig(name="t", n_layer=2, n_head=2, d_model=32, max_positions=256), cfg,
             progress=False)  # fmt: skip
    return root


def fast(**kw):
    return ProbeConfig(max_positions=kw.pop("max_positions", 8), linear=LinearProbeConfig(epochs=3), **kw)


def test_p_fast_writes_every_layer_position_task_and_control(run, tmp_path):
    rows = run_probe(run / "model", run / "data", fast(), tmp_path / "p")
    csv_rows = read_csv(tmp_path / "p/probes.csv")
    assert list(csv_rows[0]) == list(COLUMNS) and len(csv_rows) == len(rows)
    assert [float(r["test_acc"]) for r in csv_rows] == [r["test_acc"] for r in rows]
    per_control = LAYERS * (6 + 8) * len(TASKS)
    assert len(rows) == 3 * per_control
    assert {r["control"] for r in rows} == {"none", "shuffled", "random_init"}
    assert len({r["data"] for r in rows}) == 1
    for r in rows:
        assert 0 <= r["test_acc"] <= 1 and 0 <= r["majority"] <= 1
        assert r["n"] == 20 or r["position_kind"] == "token"
    for name in ("positions.png", "layers_first.png", "layers_whole.png", "status.json", "config.json"):
        assert (tmp_path / "p" / name).is_file()


def test_a_finished_probe_run_is_not_overwritten_and_states_are_reused(run, tmp_path):
    out = tmp_path / "p"
    run_probe(run / "model", run / "data", fast(controls=[], max_positions=0), out, plots=False)
    cached = sorted(p.name for p in (out / "states").glob("*.npy"))
    with pytest.raises(ConfigError, match="overwrite"):
        run_probe(run / "model", run / "data", fast(controls=[], max_positions=0), out)
    again = run_probe(run / "model", run / "data", fast(controls=[], max_positions=0), out, overwrite=True,
                      plots=False)  # fmt: skip
    assert sorted(p.name for p in (out / "states").glob("*.npy")) == cached and len(again) == LAYERS * 6 * 11


def test_seen_marks_attributes_already_in_the_text(run, tmp_path):
    rows = run_probe(
        run / "model", run / "data", fast(controls=[], max_positions=0), tmp_path / "p", plots=False
    )
    s0 = [r for r in rows if r["position"] == "s0"]
    s5 = [r for r in rows if r["position"] == "s5" and r["task"] == "first"]  # each attribute once
    assert all(r["seen"] == 0 for r in s0)
    assert np.mean([r["seen"] for r in s5]) == pytest.approx(5 / 6, abs=1e-3)


def test_q_fast_reads_the_name_and_the_end_token(run, tmp_path):
    rows = run_probe(run / "model", run / "data", fast(kind="q_fast", controls=["shuffled"]), tmp_path / "q")
    assert {r["position"] for r in rows} == {"name_last", "end"}
    assert len(rows) == 2 * LAYERS * 2 * len(TASKS)
    assert (tmp_path / "q/qprobe.png").is_file()


def test_entry_split_trains_on_one_entry_and_tests_on_another(run, tmp_path):
    rows = run_probe(run / "model", run / "data", fast(split="entry", controls=[], max_positions=0),
                     tmp_path / "e", plots=False)  # fmt: skip
    assert {r["n"] for r in rows} == {40} and {r["n_train"] for r in rows} == {40}


def test_train_entries_adds_training_rows_and_tests_the_same_rows(run, tmp_path):
    one = run_probe(
        run / "model", run / "data", fast(controls=[], max_positions=0), tmp_path / "1", plots=False
    )
    both = run_probe(run / "model", run / "data", fast(controls=[], max_positions=0, train_entries=None),
                     tmp_path / "2", plots=False)  # fmt: skip
    assert {r["n_train"] for r in one} == {20} and {r["n_train"] for r in both} == {40}  # 2 entries each
    assert {r["n"] for r in one} == {r["n"] for r in both} == {20}  # P_test's entry 0 in both
    assert [r["majority"] for r in one] == [r["majority"] for r in both]
    q = run_probe(run / "model", run / "data", fast(kind="q_fast", controls=[], train_entries=None),
                  tmp_path / "q", plots=False)  # fmt: skip
    assert {r["n_train"] for r in q} == {20}  # the name alone: one row per person
    with pytest.raises(ConfigError, match="train_entries"):
        ProbeConfig.from_dict({"kind": "p_paper", "train_entries": 2})


@pytest.mark.parametrize("kind", ["p_paper", "q_paper"])
def test_the_papers_probes_run_per_task_and_position(run, tmp_path, kind):
    cfg = ProbeConfig(kind=kind, steps=3, probe_batch=8, tasks=["birth_date.first", "company.whole"],
                      positions=[0, 2], controls=["shuffled"], norm="batch" if kind == "q_paper" else "layer",
                      rank=16 if kind == "q_paper" else 2)  # fmt: skip
    rows = run_probe(run / "model", run / "data", cfg, tmp_path / kind)
    n_pos = 2 if kind == "p_paper" else 1
    assert len(rows) == 2 * n_pos * 2
    assert {r["layer"] for r in rows} == {LAYERS - 1}
    assert (tmp_path / kind / ("positions.png" if kind == "p_paper" else "qprobe.png")).is_file()


def test_bad_probe_configs_fail_before_work(run, tmp_path):
    with pytest.raises(ConfigError, match="probe.kind"):
        ProbeConfig.from_dict({"kind": "x_probe"})
    with pytest.raises(ConfigError, match="probe.tasks"):
        ProbeConfig.from_dict({"tasks": ["birth_date.whole"]})
    with pytest.raises(ConfigError, match="controls"):
        ProbeConfig.from_dict({"controls": ["none"]})
    with pytest.raises(ConfigError, match="unknown"):
        ProbeConfig.from_dict({"epochs": 3})
    assert not (tmp_path / "x").exists()


def _files(folder):
    return sorted((p.relative_to(folder).as_posix(), p.stat().st_mtime_ns) for p in folder.rglob("*"))


@pytest.mark.parametrize("case", ["training_run", "user_folder", "unwritable"])
def test_an_out_that_is_not_a_probe_run_is_refused_before_any_work(run, tmp_path, case):
    if case == "training_run":  # the pretraining run itself: its config.json and status.json would go
        out, message = run, "holds another kind of run"
    elif case == "user_folder":
        out, message = tmp_path / "mine", "is not empty and holds no probe run ('thesis.tex')"
        out.mkdir()
        (out / "thesis.tex").write_text("keep")
    else:
        (tmp_path / "file").write_text("")
        out, message = tmp_path / "file" / "p", "is not writable"
    before = _files(out.parent if case == "unwritable" else out)
    with pytest.raises(ConfigError, match=re.escape(message)):
        run_probe(run / "model", run / "data", fast(controls=[]), out, overwrite=True, plots=False)
    assert _files(out.parent if case == "unwritable" else out) == before


def test_a_device_this_machine_lacks_is_refused_before_any_work(run, tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(ConfigError, match="device=cuda: this machine has no CUDA device"):
        run_probe(run / "model", run / "data", fast(controls=[]), tmp_path / "p", device="cuda")
    with pytest.raises(ConfigError, match="not a device name"):
        run_probe(run / "model", run / "data", fast(controls=[]), tmp_path / "p", device="gpu0")
    assert not (tmp_path / "p").exists()


def test_a_biod_dataset_is_refused_before_any_work(run, tmp_path):
    from biolab.data.dataset import write_dataset

    data = tmp_path / "d"
    biod = {"K": 2, "C": 2, "D": 16, "L": 1, "T": 32}
    write_dataset(DataConfig(n_people=20, style="bioD", biod=biod), data, progress=False)
    with pytest.raises(ConfigError, match="is bioD"):
        run_probe(run / "model", data, fast(controls=[]), tmp_path / "p")
    assert not (tmp_path / "p").exists()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"linear": {"solver": "svm"}}, "probe.linear.solver must be logreg, ridge or auto"),
        ({"linear": {"l2": []}}, "probe.linear.l2 must be a number >= 0 or a non-empty list"),
        ({"linear": {"val_fraction": 1.5}}, r"probe.linear.val_fraction must be in \(0, 1\)"),
        ({"linear": {"bogus": 1}}, r"unknown probe.linear key\(s\) \['bogus'\]"),
        ({"linear": {"epochs": "many"}}, "probe.linear.epochs must be int"),
        ({"batch_size": 0}, "probe.batch_size must be >= 1"),
        ({"max_people": 0}, "probe.max_people must be >= 1"),
    ],
)
def test_bad_probe_values_are_one_line_config_errors(change, message):
    from omegaconf import OmegaConf

    from biolab.cli import compose

    d = OmegaConf.to_container(compose("probe", ["model_dir=m", "data_dir=d", "out=o"]).probe)
    for key, value in change.items():
        d[key] = {**d[key], **value} if isinstance(value, dict) else value
    with pytest.raises(ConfigError, match=message):
        ProbeConfig.from_dict(d)
