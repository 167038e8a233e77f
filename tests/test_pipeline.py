import dataclasses
import json

import pytest
from omegaconf import OmegaConf

from biolab.cli import compose
from biolab.errors import ConfigError
from biolab.pipeline.experiment import plan_experiment
from biolab.pipeline.plan import (
    NAME_LIMIT,
    PlannedRun,
    check_run_names,
    plan_runs,
    run_name,
    run_overrides,
)
from biolab.pipeline.runner import run_experiment
from biolab.stages.manifest import Run, load_runs
from biolab.stages.probe import probe_family

TINY = ["data.n_people=24", "train.steps=4", "train.batch_size=4", "train.ctx=64", "model.n_layer=1",
        "model.d_model=32", "model.n_head=2", "tokenizer.vocab_size=400", "finetune.train.steps=2",
        "finetune.train.batch_size=4", "probe.linear.epochs=1", "probe.max_positions=4", "progress=false",
        "train.wandb=disabled", "finetune.train.wandb=disabled"]  # fmt: skip


def plan(overrides, datasets=None):
    """The runs scripts/run.py plans for ``overrides`` (``datasets``: instead of the experiment's)."""
    return plan_experiment([*overrides, *([f"datasets=[{','.join(datasets)}]"] if datasets else [])])


def test_the_grid_shares_one_pretraining():
    runs = plan(["experiment=fig2_finetune_grid"])
    assert len(runs) == 8 and len({r.manifest.stages["pretrain"] for r in runs}) == 1
    assert len({r.manifest.stages["eval"] for r in runs}) == 8


def test_datasets_share_nothing_but_experiments_share_stages():
    pprobe = plan(["experiment=pprobe_contrast"])
    same = ["data.n_people=500", "data.max_values=10", "train.steps=2500"]  # pprobe_contrast's own
    fig3 = plan(["experiment=fig3_augmentation", *same], datasets=["bioS_single"])
    assert pprobe[0].manifest.stages["pretrain"] == fig3[0].manifest.stages["pretrain"]
    assert pprobe[0].manifest.stages["data"] != pprobe[1].manifest.stages["data"]


def test_max_values_at_its_default_keeps_every_earlier_data_key():
    cfg = OmegaConf.to_container(compose("run", ["experiment=fig3_augmentation"]), resolve=True)
    key = plan_runs(cfg)[0].manifest.stages["data"]
    del cfg["data"]["max_values"]
    assert plan_runs(cfg)[0].manifest.stages["data"] == key  # roots built before the key still match
    cfg["data"]["max_values"] = 10
    assert plan_runs(cfg)[0].manifest.stages["data"] != key


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
    # named after the dataset and the overrides that shape it (cut to a hash past NAME_LIMIT)
    assert [m.name.split("__")[0] for m in manifests] == ["bioS_single", "bioS_multi5_permute_fullname"]
    assert "__data.n_people=24__" in manifests[0].name
    m = json.loads(manifests[1].read_text())
    assert {"probe/p_fast", "probe/q_fast"} <= set(m["stages"])  # one flat map of slots (format 2)
    for rel in [
        m["stages"]["data"],
        m["stages"]["eval"],
        m["stages"]["probe/p_fast"],
        m["stages"]["probe/q_fast"],
    ]:
        assert json.loads((tmp_path / rel / "status.json").read_text())["status"] == "done"
    assert (tmp_path / m["stages"]["eval"] / "eval" / "metrics.json").is_file()
    assert (tmp_path / m["stages"]["probe/p_fast"] / "probes.csv").is_file()
    # what the stages record themselves survives the runner's own "done" (one merging writer)
    pre = json.loads((tmp_path / m["stages"]["pretrain"] / "status.json").read_text())
    assert pre["status"] == "done" and pre["final"]["step"] == 4 and pre["params_no_embeddings"] > 0
    probe = json.loads((tmp_path / m["stages"]["probe/p_fast"] / "status.json").read_text())
    assert (
        probe["rows"]
        == len((tmp_path / m["stages"]["probe/p_fast"] / "probes.csv").read_text().splitlines()) - 1
    )
    # a probe's family (p or q) from the manifest's probe_kinds, or from its stage's config.yaml
    run = load_runs(tmp_path)[1]
    assert run.get("probe_kinds") == {"p_fast": "p_fast", "q_fast": "q_fast"}
    run = Run(run.root, run.path, dataclasses.replace(run.manifest, probe_kinds={}))
    assert {p: probe_family(run, p) for p in run.probes()} == {"p_fast": "p", "q_fast": "q"}
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


def test_a_run_is_named_after_its_dataset_and_the_overrides_that_shape_it():
    typed = ["model.n_layer=1", "finetune.train.lr=1e-3", "data=bioS_single", "experiment=demo", "scale=tiny",
             "root=R", "jobs=2", "progress=false", "report=false", "probe=q_fast", "datasets=[bioS_single]",
             "hydra.verbose=true", "replace_runs=true"]  # fmt: skip
    named = run_overrides(typed)
    assert named == ["finetune.train.lr=0.001", "model.n_layer=1"]
    # a sweep job's override as Hydra writes it, in another order: the same run
    assert run_overrides(["finetune.train.lr=0.001", "model.n_layer=1"]) == named
    assert run_name("bioS_single", named) == "bioS_single__finetune.train.lr=0.001__model.n_layer=1"
    assert run_name("bioS_single", []) == "bioS_single"  # existing roots keep their manifest names
    safe = run_name(
        "bioS_single", run_overrides(["tokenizer.path=/tok/a", "probes=[p_fast]", "~eval.max_people"])
    )
    assert safe == "bioS_single__probes=_p_fast___tokenizer.path=_tok_a__~eval.max_people"


def test_a_long_run_name_is_cut_and_ends_in_a_hash_of_every_override():
    many = [f"train.k{i}={i}" for i in range(20)]
    name = run_name("bioS_single", many)
    assert len(name) <= NAME_LIMIT and name.startswith("bioS_single__train.k0=0__")
    assert name.split("__")[-1].startswith("+")  # how many overrides the cut left out
    assert run_name("bioS_single", [*many[:-1], "train.k19=other"]) != name


def test_plan_runs_names_runs_by_their_overrides_and_records_them():
    overrides = ["experiment=fig2_finetune_grid", "finetune.train.lr=1e-3"]
    cfg = OmegaConf.to_container(compose("run", overrides), resolve=True)
    runs = plan_runs(cfg, named=run_overrides(overrides))
    assert len(runs) == 8 and all(r.manifest.overrides == ["finetune.train.lr=0.001"] for r in runs)
    assert all(
        r.manifest.run.startswith("bioS_single__finetune.train.lr=0.001__") for r in runs
    )  # then the grid
    plain = plan_runs(cfg)[0].manifest
    assert plain.overrides == [] and plain.run == f"bioS_single__{plain.grid}"


def test_two_runs_under_one_name_with_other_stages_stop_the_plan():
    same = plan(["experiment=demo"])
    check_run_names([*same, *plan(["experiment=demo"])])  # the same runs twice: one set of stages
    other = plan(["experiment=demo", "data.n_people=30"])
    assert other[0].manifest.run == "bioS_single__data.n_people=30"  # an override names the run
    # as if it had not (a run filed before overrides named runs)
    unnamed = PlannedRun(dataclasses.replace(other[0].manifest, run="bioS_single"), other[0].build)
    with pytest.raises(
        ConfigError, match=r"two runs of demo are named bioS_single but differ in corpus, data, "
    ):
        check_run_names([same[0], unnamed])


def test_a_stage_s_wandb_run_is_named_grouped_and_tagged_by_the_run_that_built_it(tmp_path):
    from biolab.stages.kind import wandb_meta
    from biolab.stages.qa import exact_match_summary

    context = {"experiment": "demo", "data": "bioS_single", "scale": "tiny", "run": "bioS_single"}
    inputs = {"corpus": tmp_path / "corpus" / "abc123"}
    meta = wandb_meta("pretrain", inputs, tmp_path / "pretrain" / "def456", context)
    assert meta["name"] == "demo/bioS_single/pretrain" and meta["group"] == "demo"
    assert meta["tags"] == ["bioS_single", "tiny", "pretrain"]
    assert meta["config"]["stage"] == "pretrain/def456"
    assert meta["config"]["inputs"] == {"corpus": "corpus/abc123"}
    metrics = {"splits": {"test": {"exact_match": {"birth_date": 0.5, "mean": 0.25}}}}
    assert exact_match_summary(metrics) == {"exact_match/test/birth_date": 0.5, "exact_match/test/mean": 0.25}


@pytest.mark.slow
def test_every_model_running_stage_takes_its_device_from_pick_device(tmp_path, monkeypatch):
    """One device choice (biolab.device.pick_device, whose default is default_device): every kind
    that runs a model asks it, so a GPU machine evaluates, probes and scores on the GPU as it trains."""
    import inspect

    from biolab import device
    from biolab.stages import KINDS

    asked_by = set()
    builds = {k.build.__name__ for k in KINDS.values()}

    def spy():
        asked_by.update(f.function for f in inspect.stack() if f.function in builds)
        return "cpu"

    monkeypatch.setattr(device, "default_device", spy)
    every = [*TINY, "data.n_people=20", "probes=[p_fast]", "memorization.enabled=true",
             "capacity.enabled=true", "capacity.quantize=[]", "manipulation.tasks=[birth_day]",
             "manipulation.modes=[finetune,mixed]"]  # fmt: skip
    for qa_eval in ("finetune", "direct"):
        runs = plan([*every, f"qa_eval={qa_eval}"])
        manifests = run_experiment(runs, tmp_path, progress=False, log=lambda m: None)
        stage = json.loads(manifests[0].read_text())["stages"]["eval"]
        metrics = json.loads((tmp_path / stage / "eval" / "metrics.json").read_text())
        assert metrics["device"] == "cpu"  # what it ran on, recorded
    runs_model = {k.build.__name__ for k in KINDS.values() if k.runs_model}
    kinds = ("pretrain", "finetune", "evaluate", "probe", "memorization", "capacity", "task_finetune",
             "task_mixed", "task_eval")  # fmt: skip
    assert runs_model == {f"build_{k}" for k in kinds}
    assert asked_by == runs_model  # and no kind that only writes files asks
