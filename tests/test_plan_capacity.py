"""The capacity sweep (Part 3.3 Figure 1) planned and run: N x models x exposures on each dataset, the
capacity stage of every model, the report's capacity.csv from which R is recomputed."""

import csv
import math

import pytest
from omegaconf import OmegaConf

from biolab.cli import compose
from biolab.errors import ConfigError
from biolab.pipeline.experiment import plan_experiment
from biolab.pipeline.plan import plan_runs, sweep_variants
from biolab.pipeline.runner import run_experiment
from biolab.report.write import write_report

TWO = {"a": {"n_layer": 1, "n_head": 1, "d_model": 16}, "b": {"n_layer": 1, "n_head": 2, "d_model": 32}}


def planned(overrides):
    """The manifests of the runs ``python scripts/run.py OVERRIDES`` plans."""
    return [r.manifest for r in plan_experiment(overrides)]


def test_the_sweep_is_every_combination_named_after_its_values():
    variants = sweep_variants([10, 20], TWO, [100, 1000])
    assert len(variants) == 8 and variants[0][0] == "N10__a__e100"
    assert "train.exposures=1000" in variants[1][1] and "++model.n_layer=1" in variants[1][1]
    assert sweep_variants(None, None, None) == [(None, [])]
    with pytest.raises(ConfigError, match="exposures must be null or a non-empty list"):
        sweep_variants(None, None, [])
    with pytest.raises(ConfigError, match="models.a b must map"):
        sweep_variants(None, {"a b": {}}, None)


def test_cap_fig1_pretrains_each_model_per_exposures_on_one_dataset_and_measures_each():
    runs = planned(["experiment=cap_fig1"])
    assert len(runs) == 12 and len({r.stages["data"] for r in runs}) == 1
    assert len({r.stages["pretrain"] for r in runs}) == 12
    assert all(r.stages["capacity"] and r.run.startswith("bioD_cap__N300__gpt2-") for r in runs)
    arch = {r.run: r for r in planned(["experiment=cap_arch"])}
    # the GPT2 model of cap_arch is cap_fig1's at 100 exposures: built once
    shared = next(r for r in runs if r.run == "bioD_cap__N300__gpt2-2-2__e100")
    assert arch["bioD_cap__N300__gpt2-2-2__e100"].stages["pretrain"] == shared.stages["pretrain"]


def test_unset_exposures_keep_every_earlier_pretraining_key():
    cfg = OmegaConf.to_container(compose("run", ["experiment=fig3_augmentation"]), resolve=True)
    key = plan_runs(cfg)[0].manifest.stages["pretrain"]
    for k in ("exposures", "min_steps"):
        del cfg["train"][k]
    del cfg["data"]["biod"]
    assert plan_runs(cfg)[0].manifest.stages["pretrain"] == key


@pytest.mark.parametrize("extra, match", [
    (["qa_eval=finetune"], "bioD is for capacity"),
    (["probes=[p_fast]"], "bioD is for capacity"),
    (["data=bioS_single", "model.arch=modernbert"], "capacity reads a causal model"),
])  # fmt: skip
def test_what_capacity_cannot_measure_fails_before_work(extra, match):
    base = ["experiment=cap_fig1", "models=null", "exposures=null", "people=null", "datasets=null"]
    with pytest.raises(ConfigError, match=match):
        planned([*base, *(extra if "data=" in " ".join(extra) else ["data=bioD_cap", *extra])])


def test_a_tiny_sweep_runs_and_its_csv_recomputes_r(tmp_path):
    over = ["experiment=cap_fig1", "people=[16]", "exposures=[2]", f"models={TWO}".replace("'", ""),
            "data.multi=2", "train.warmup_steps=0", "train.min_steps=null", "capacity.quantize=[4]",
            "train.wandb=disabled", "progress=false"]  # fmt: skip
    runs = plan_experiment(over)
    run_experiment(runs, tmp_path, progress=False)
    write_report(tmp_path)
    rows = list(csv.DictReader(open(tmp_path / "report" / "capacity.csv")))
    assert {(r["model"], r["quant"]) for r in rows} == {
        ("a", "fp32"),
        ("a", "int4"),
        ("b", "fp32"),
        ("b", "int4"),
    }
    for r in rows:
        n, p1, p2, P = int(r["N"]), float(r["p1"]), float(r["p2"]), int(r["P"])
        name = max(0.0, n * (math.log2(2 ** float(r["log2_N0"]) - n) - max(p1, math.log(n)) / math.log(2)))
        value = max(0.0, n * (float(r["log2_S0"]) - p2 / math.log(2)))
        assert float(r["bits"]) == pytest.approx(
            name + value + float(r["diversity_bits"]), rel=1e-4, abs=1e-3
        )
        assert float(r["exposures"]) >= 2 and float(r["bits"]) <= float(r["R_max"]) * P * (1 + 1e-6)
    report = (tmp_path / "report" / "report.md").read_text()
    assert "Knowledge capacity" in report and (tmp_path / "report" / "figures" / "cap_fig1").is_dir()
    assert "Part 3.3's laws come from bioS(N) with N >= 10,000" in report and "here N = 16" in report


def test_a_scale_the_per_scale_table_lacks_is_one_line():
    """A scale a user adds (conf/scale/mine.yaml) that cap_fig1's table does not list: a ConfigError
    naming the key and the scale, not omegaconf's traceback."""
    from biolab.pipeline.experiment import plain

    cfg = {"experiment": "cap_fig1", "scale": "mine", "datasets": "${cap.${scale}.datasets}",
           "cap": {"tiny": {"datasets": ["bioD_cap"]}}}  # fmt: skip
    with pytest.raises(ConfigError, match=r"cap.mine.datasets.*no settings for scale=mine") as err:
        plain(cfg)
    assert "\n" not in str(err.value)
    assert plain({**cfg, "scale": "tiny"})["datasets"] == ["bioD_cap"]
