"""The emergence map read from results.csv rows (biolab.report.emergence, scripts/emergence_map.py)."""

import csv
import io
from pathlib import Path

import pytest
from conftest import run_in_fork

from biolab.data.people import ATTRIBUTES
from biolab.report.emergence import line_styles, map_csv, map_markdown, map_rows, plot_map, sweep_point

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "emergence_map.py"


def result(
    run, data, metric, value, attribute="mean", position="", probe="", experiment="emergence", n=50, paper=""
):
    return {
        "experiment": experiment,
        "scale": "laptop",
        "run": run,
        "data": data,
        "model": "tiny",
        "finetune": "full",
        "split": "test",
        "probe": probe,
        "attribute": attribute,
        "task": "",
        "metric": metric,
        "position": position,
        "value": str(value),
        "paper_value": str(paper),
        "paper_source": "",
        "note": "",
        "n": str(n),
        "ci_low": "1.0",
        "ci_high": "9.0",
    }


def test_a_run_name_gives_its_sweep_point():
    assert sweep_point("bioS_single__N300__e500__steps-100", "bioS_single") == (300, 500, "steps-100")
    assert sweep_point("bioS_single_cel__N100__deep8__e1000", "bioS_single_cel") == (100, 1000, "deep8")
    assert sweep_point("bioS_single", "bioS_single") == (None, None, "")


def test_qa_cells_and_pooled_probe_cells_with_their_intervals(tmp_path):
    rows = []
    for n_people, acc in ((100, 20.0), (300, 60.0)):
        for steps in (100, 400):
            run = f"bioS_multi5_permute__N{n_people}__e500__steps-{steps}"
            rows += [
                result(run, "bioS_multi5_permute", "qa_exact_match", acc + steps / 100, paper=96.6),
                result(run, "bioS_multi5_permute", "qa_majority", 2.0),
            ]
            # the probe stage is shared by a pretraining's grid points: one cell per pretraining
            for k, a in enumerate(ATTRIBUTES):
                rows.append(
                    result(
                        run,
                        "bioS_multi5_permute",
                        "pprobe_first_token_acc",
                        10.0 * k,
                        a,
                        "s0",
                        "p_fast",
                        n=n_people // 2,
                        paper=100.0,
                    )
                )
                rows.append(
                    result(
                        run,
                        "bioS_multi5_permute",
                        "pprobe_first_token_majority",
                        5.0,
                        a,
                        "s0",
                        "p_fast",
                        n=n_people // 2,
                    )
                )
    rows.append(result("other", "bioS_single", "qa_exact_match", 50.0, experiment="fig3_augmentation"))
    deep = result("bioS_single__N100__deep8__e500__steps-100", "bioS_single", "qa_exact_match", 3.0)
    rows.append({**deep, "model": "deep8"})
    cells = map_rows(rows)
    qa = [c for c in cells if c["effect"] == "P_test QA, bioS_multi5_permute"]
    assert [(c["N"], c["setting"], c["value"], c["baseline"]) for c in qa] == [
        (100, "steps-100", 21.0, 2.0),
        (300, "steps-100", 61.0, 2.0),
        (100, "steps-400", 24.0, 2.0),
        (300, "steps-400", 64.0, 2.0),
    ]
    assert all(c["paper_value"] == 96.6 for c in qa)
    [single] = [c for c in cells if c["effect"] == "P_test QA, bioS_single"]
    assert (single["model"], single["N"], single["exposures"], single["setting"]) == (
        "deep8",
        100,
        500,
        "steps-100",
    )
    probe = [c for c in cells if c["effect"].startswith("P-probe s0")]
    # one cell per pretraining whatever finetuned it (LoRA and full share the probe)
    assert [(c["N"], c["finetune"], c["setting"]) for c in probe] == [(100, "", ""), (300, "", "")]
    # the five attributes after birth date, pooled: 10..50% on n/2 people each
    assert probe[0]["value"] == 30.0 and probe[0]["n"] == 5 * 50 and probe[0]["baseline"] == 5.0
    assert probe[0]["ci_low"] < 30.0 < probe[0]["ci_high"]
    assert probe[1]["ci_high"] - probe[1]["ci_low"] < probe[0]["ci_high"] - probe[0]["ci_low"]  # more people
    table = map_markdown(cells)
    assert (
        "| tiny | 500 | full | steps-100 | 21.0 [1.0, 9.0] (base 2.0) | 61.0 [1.0, 9.0] (base 2.0) |" in table
    )
    written = list(csv.DictReader(io.StringIO(map_csv(cells))))
    assert [r["effect"] for r in written] == [c["effect"] for c in cells] and written[0]["model"] == "deep8"
    assert plot_map(cells, tmp_path / "map.png").stat().st_size > 0


def test_a_probe_cell_per_pretraining_setting_not_per_finetune():
    rows = []
    for run in ("bioS_single__N100__e500__steps-100", "bioS_single__N100__e500__finetune=lora__steps-400",
                "bioS_single__N100__e500__data.max_values=10__steps-100"):  # fmt: skip
        acc = 40.0 if "max_values" in run else 5.0
        for a in ATTRIBUTES:
            for metric, value in (("pprobe_first_token_acc", acc), ("pprobe_first_token_majority", 3.0)):
                rows.append(result(run, "bioS_single", metric, value, a, "s0", "p_fast"))
    probe = map_rows(rows)
    # LoRA and full finetunes of one pretraining share its probe; smaller pools make another pretraining
    assert [(c["setting"], c["value"]) for c in probe] == [("", 5.0), ("data.max_values=10", 40.0)]


def test_a_colour_per_pretrained_model_and_a_marker_per_finetune_in_every_panel():
    def cell(model, finetune, setting, effect="P_test QA, bioS_single"):
        return {"effect": effect, "model": model, "exposures": 500, "finetune": finetune, "setting": setting}

    cells = [
        cell("tiny", "full", "steps-100"),
        cell("tiny", "full", "steps-400"),
        cell("tiny", "lora", "finetune=lora__steps-100"),
        cell("tiny", "full", "data.max_values=10__steps-100"),
        cell("tiny", "", "", "P-probe s0, five later attributes, bioS_single"),
        cell("tiny", "", "data.max_values=10", "P-probe s0, five later attributes, bioS_single"),
        *(cell(f"m{k}", "full", "steps-100") for k in range(10)),
    ]
    looks = line_styles(cells)
    tiny = looks[("tiny", 500, "full", "steps-100")]
    assert tiny["pretrained"] == "tiny 500 exposures" and tiny["finetuned"] == "full steps-100"
    # the probe reads the model that each finetune of it started from: the same colour
    probe = looks[("tiny", 500, "", "")]
    assert probe["color"] == tiny["color"] and probe["finetuned"].startswith("no finetune")
    small = looks[("tiny", 500, "full", "data.max_values=10__steps-100")]
    assert small["color"] == looks[("tiny", 500, "", "data.max_values=10")]["color"] != tiny["color"]
    assert small["marker"] == tiny["marker"] and small["linestyle"] == tiny["linestyle"]
    lora = looks[("tiny", 500, "lora", "finetune=lora__steps-100")]
    assert lora["finetuned"] == "lora steps-100" and lora["color"] == tiny["color"]
    assert len({(v["marker"], v["linestyle"]) for v in looks.values()}) == 4  # full x2, lora, none
    # 12 pretrained models: no two share a colour (the 10-colour cycle repeated one before)
    assert len({tuple(v["color"]) for v in looks.values()}) == 12


def write_results(path, rows):
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def test_the_script_writes_the_map_and_refuses_a_file_without_the_experiments(tmp_path):
    rows = [result("bioS_single__N100__e500", "bioS_single", "qa_exact_match", 3.0)]
    src = tmp_path / "results.csv"
    write_results(src, rows)
    r = run_in_fork([SCRIPT, src, tmp_path / "out"])
    assert r.returncode == 0, r.stderr
    assert {p.name for p in (tmp_path / "out").iterdir()} == {
        "emergence_map.csv",
        "emergence_map.md",
        "emergence_map.png",
    }
    rows[0]["experiment"] = "fig3_augmentation"
    write_results(src, rows)
    r = run_in_fork([SCRIPT, src, tmp_path / "x"])
    assert r.returncode == 1 and r.stderr.strip().startswith("error:") and "holds no run" in r.stderr
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("missing", ["nope.csv"])
def test_a_missing_results_file_is_one_line(tmp_path, missing):
    r = run_in_fork([SCRIPT, tmp_path / missing, tmp_path])
    assert r.returncode == 1 and r.stderr.count("\n") == 1 and "is not a file" in r.stderr


@pytest.mark.slow
def test_the_chosen_laptop_scale_reuses_the_maps_cells():
    """scale=laptop_deep is the map's deep8 N=100 e500 point: Figure 3 at it plans the same pretraining
    and finetune stages as the map's cells of its three datasets, so a root holding the map reuses them
    (and the new Figure 3 is the same model the map measured); Figure 10 likewise."""
    from biolab.pipeline.experiment import plan_experiment

    cells = plan_experiment(
        ["experiment=emergence", "scale=laptop", "people=[100]", "models={deep8: {n_layer: 8}}"]
    )
    fig3 = plan_experiment(["experiment=fig3_augmentation", "scale=laptop_deep"])
    in_map = {r.manifest.stages["eval"] for r in cells if r.manifest.grid == "steps-100"}
    shared = {r.manifest.data for r in fig3 if r.manifest.stages["eval"] in in_map}
    assert shared == {"bioS_single", "bioS_multi5_permute", "bioS_multi5_permute_fullname"}
    assert {r.manifest.model for r in fig3} == {"deep8"}
    # Figure 10's bioS_single at QAr 0.8 is the map's mixed cell at that scale
    deep8 = ["scale=laptop_deep", "people=[100]", "models={deep8: {n_layer: 8}}"]
    (mixed,) = plan_experiment(["experiment=emergence_mixed", *deep8])
    fig10 = plan_experiment(["experiment=fig10_mixed", "scale=laptop_deep", "train.qa_ratio=0.8"])
    assert mixed.manifest.stages in [r.manifest.stages for r in fig10]
