import json

import pytest
from omegaconf import OmegaConf

from biolab.cli import compose, config_groups
from biolab.errors import ConfigError
from biolab.pipeline.plan import plan_runs, validate_plan
from biolab.pipeline.runner import run_experiment

TINY = ["data.n_people=24", "train.steps=4", "train.batch_size=4", "train.ctx=64", "model.n_layer=1",
        "model.d_model=32", "model.n_head=2", "tokenizer.vocab_size=400", "finetune.train.steps=2",
        "finetune.train.batch_size=4", "probe.linear.epochs=1", "probe.max_positions=4", "progress=false",
        "train.wandb=disabled", "finetune.train.wandb=disabled"]  # fmt: skip


def plan(overrides, datasets=None):
    cfg = compose("run", overrides)
    names = datasets or (list(cfg.datasets) if cfg.datasets else [cfg.data.name])
    probes = {
        p: OmegaConf.to_container(compose("run", [*overrides, f"probe={p}"]).probe, resolve=True)
        for p in cfg.probes
    }
    runs = []
    for name in names:
        runs += plan_runs(
            OmegaConf.to_container(compose("run", [*overrides, f"data={name}"]), resolve=True), probes
        )
    return runs


@pytest.mark.parametrize("scale", ["tiny", "small", "paper"])
@pytest.mark.parametrize("experiment", config_groups()["experiment"])
def test_every_experiment_plans_valid_stages_at_every_scale(experiment, scale):
    cfg = compose("run", [f"experiment={experiment}", f"scale={scale}"])
    assert cfg.experiment == experiment and cfg.scale == scale
    runs = plan([f"experiment={experiment}", f"scale={scale}"], datasets=list(cfg.datasets)[:2])
    validate_plan(runs)
    assert all(r["paper"] and any(r["paper"].values()) for r in runs)  # each names its paper numbers


def test_the_grid_shares_one_pretraining():
    runs = plan(["experiment=fig2_finetune_grid"])
    assert len(runs) == 8 and len({r["stages"]["pretrain"] for r in runs}) == 1
    assert len({r["stages"]["eval"] for r in runs}) == 8


def test_datasets_share_nothing_but_experiments_share_stages():
    demo = plan(["experiment=demo"])
    fig3 = plan(["experiment=fig3_augmentation"], datasets=["bioS_single"])
    assert demo[0]["stages"]["pretrain"] == fig3[0]["stages"]["pretrain"]
    assert demo[0]["stages"]["data"] != demo[1]["stages"]["data"]


def test_max_values_at_its_default_keeps_every_earlier_data_key():
    cfg = OmegaConf.to_container(compose("run", ["experiment=demo"]), resolve=True)
    key = plan_runs(cfg)[0]["stages"]["data"]
    del cfg["data"]["max_values"]
    assert plan_runs(cfg)[0]["stages"]["data"] == key  # roots built before the key still match
    cfg["data"]["max_values"] = 10
    assert plan_runs(cfg)[0]["stages"]["data"] != key


def test_bad_qa_eval_and_grid_keys():
    cfg = OmegaConf.to_container(compose("run", ["qa_eval=sometimes"]), resolve=True)
    with pytest.raises(ConfigError, match="qa_eval"):
        plan_runs(cfg)
    cfg = OmegaConf.to_container(compose("run", ["+grid={train.lr: [1, 2]}"]), resolve=True)
    with pytest.raises(ConfigError, match="finetune"):
        plan_runs(cfg)


@pytest.mark.slow
def test_a_tiny_experiment_runs_then_is_reused(tmp_path):
    runs = plan(["experiment=demo", *TINY])
    logs = []
    manifests = run_experiment(runs, tmp_path, progress=False, log=logs.append)
    assert [m.name for m in manifests] == ["bioS_single.json", "bioS_multi5_permute_fullname.json"]
    m = json.loads(manifests[1].read_text())
    for rel in [m["stages"]["data"], m["stages"]["eval"], *m["stages"]["probe"].values()]:
        assert json.loads((tmp_path / rel / "status.json").read_text())["status"] == "done"
    assert (tmp_path / m["stages"]["eval"] / "eval" / "metrics.json").is_file()
    assert (tmp_path / m["stages"]["probe"]["p_fast"] / "probes.csv").is_file()
    # what the stages record themselves survives the runner's own "done" (one merging writer)
    pre = json.loads((tmp_path / m["stages"]["pretrain"] / "status.json").read_text())
    assert pre["status"] == "done" and pre["final"]["step"] == 4 and pre["params_no_embeddings"] > 0
    probe = json.loads((tmp_path / m["stages"]["probe"]["p_fast"] / "status.json").read_text())
    assert (
        probe["rows"]
        == len((tmp_path / m["stages"]["probe"]["p_fast"] / "probes.csv").read_text().splitlines()) - 1
    )
    logs.clear()
    run_experiment(plan(["experiment=demo", *TINY]), tmp_path, progress=False, log=logs.append)
    assert not any(line.endswith("building") for line in logs) and any("reused" in line for line in logs)


@pytest.mark.slow
def test_parallel_jobs_build_the_same_stages(tmp_path):
    runs = plan(["experiment=demo", *TINY, "probes=[]"])
    manifests = run_experiment(runs, tmp_path / "a", progress=False, jobs=2)
    serial = run_experiment(plan(["experiment=demo", *TINY, "probes=[]"]), tmp_path / "b", progress=False)
    for m, s in zip(manifests, serial, strict=True):
        assert json.loads(m.read_text()) == json.loads(s.read_text())
        stages = json.loads(m.read_text())["stages"]
        a = json.loads((tmp_path / "a" / stages["eval"] / "eval" / "metrics.json").read_text())
        b = json.loads((tmp_path / "b" / stages["eval"] / "eval" / "metrics.json").read_text())
        assert a["splits"] == b["splits"]  # same seed, same numbers, whatever the process layout
