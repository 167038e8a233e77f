"""The report reads a stage root (the fake one of conftest) and never shows a number from the wrong place."""

import csv
import json
import re
import shutil
from pathlib import Path

import pytest
from conftest import FAKE_DATASETS, build_fake_root, run_in_fork

from biolab.data.people import ATTRIBUTES
from biolab.errors import ConfigError, ReportError
from biolab.paper import SOURCE_KEYS, paper_value
from biolab.report.rows import spearman
from biolab.report.write import build_report, write_report
from biolab.stages.probe import PROBE_METRICS
from biolab.stages.qa import QA_KEYS
from biolab.stages.rows import COLUMNS, RESULT_COLUMNS, STAT_COLUMNS, wilson

FIG3 = "P3.1 Fig 3 left (= Fig 7 left)"
REPO = Path(__file__).resolve().parent.parent


def results(out):
    with open(out / "results.csv", newline="") as f:
        return list(csv.DictReader(f))


def one(rows, **where):
    hits = [r for r in rows if all(r[k] == v for k, v in where.items())]
    assert len(hits) == 1, (where, len(hits))
    return hits[0]


def manifest(root, data):
    return json.loads((root / "runs" / "demo" / f"{data}.json").read_text())


def save_manifest(root, data, m):
    (root / "runs" / "demo" / f"{data}.json").write_text(json.dumps(m))


def status(root, rel):
    return json.loads((root / rel / "status.json").read_text())


def interval(value, n):
    """The report's ``x [a, b]`` of a percent over n."""
    low, high = wilson(value / 100, n)
    return f"{value:.1f} [{100 * low:.1f}, {100 * high:.1f}]"


def probes(root, data, probe):
    with open(root / manifest(root, data)["stages"][f"probe/{probe}"] / "probes.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_the_reports_numbers_are_the_files_numbers(fake_root):
    md, report = build_report(fake_root)
    out = md.parent
    rows = results(out)
    assert list(rows[0]) == list(COLUMNS) and not report.notes
    for data in FAKE_DATASETS:
        stages = manifest(fake_root, data)["stages"]
        splits = json.loads((fake_root / stages["eval"] / "eval" / "metrics.json").read_text())["splits"]
        for split in ("train", "test"):
            for key, metric in QA_KEYS.items():
                for a in (*ATTRIBUTES, "mean"):
                    r = one(rows, run=data, split=split, metric=metric, attribute=a)
                    assert float(r["value"]) == pytest.approx(100 * splits[split][key][a], abs=1e-3)
        last = [r for r in probes(fake_root, data, "p_fast") if r["layer"] == "2" and r["control"] == "none"]
        special = [r for r in last if r["position_kind"] == "special"]
        assert len(special) == 6 * 11
        for p in special:
            metric = "pprobe_first_token_acc" if p["task"] == "first" else "pprobe_whole_attribute_acc"
            r = one(
                rows,
                run=data,
                probe="p_fast",
                metric=metric,
                attribute=p["attribute"],
                position=p["position"],
            )
            assert float(r["value"]) == pytest.approx(100 * float(p["test_acc"]))
        for p in probes(fake_root, data, "q_fast"):
            if p["layer"] == "2" and p["control"] == "none" and p["position"] == "end":
                metric = "qprobe_first_token_acc" if p["task"] == "first" else "qprobe_whole_attribute_acc"
                r = one(rows, run=data, probe="q_fast", metric=metric, attribute=p["attribute"])
                assert float(r["value"]) == pytest.approx(100 * float(p["test_acc"]))
    assert not [r for r in rows if r["position"] in ("name_last", "0", "s0") and r["probe"] == "q_fast"]


def test_the_papers_numbers_come_from_the_package(fake_root):
    out = write_report(fake_root).parent
    rows = results(out)
    single = one(rows, run="bioS_single", split="test", metric="qa_exact_match", attribute="mean")
    multi = one(
        rows, run="bioS_multi5_permute_fullname", split="test", metric="qa_exact_match", attribute="mean"
    )
    assert float(single["paper_value"]) == 9.7 and float(multi["paper_value"]) == 96.2
    assert single["paper_source"] == FIG3
    assert (
        one(rows, run="bioS_single", split="train", metric="qa_exact_match", attribute="mean")["paper_value"]
        == ""
    )
    majority = one(rows, run="bioS_single", split="test", metric="qa_majority", attribute="company_city")
    assert float(majority["paper_value"]) == 13.7
    probe = one(
        rows, run="bioS_single", metric="pprobe_first_token_acc", attribute="birth_city", position="s0"
    )
    fig5 = paper_value("P3.1 Fig 5 (= Fig 13a)", "bioS_single", "pprobe_first_token_acc", "birth_city", 0)
    assert float(probe["paper_value"]) == fig5 == 5.9
    md = (out / "report.md").read_text()
    ours = float(single["value"])
    assert "| bioS_single | tiny | lora | 300/300 | " in md
    assert f"| {interval(ours, 300)} | 9.7 | {ours - 9.7:+.1f} | {FIG3} |" in md
    assert "| 96.2 |" in md and "needs >= 3 datasets" in md and "Missing" not in md


def test_the_figures_are_written_and_shown_inline(tmp_path):
    # the multi5 probe stages kept their heatmaps (copied), the single ones did not (drawn from probes.csv)
    fake_root = build_fake_root(tmp_path / "runs", heatmaps=("bioS_multi5_permute_fullname",))
    out = write_report(fake_root).parent
    assert (out / "figures" / "demo" / "qa_vs_paper.png").read_bytes()[:4] == b"\x89PNG"
    for data in FAKE_DATASETS:
        assert (out / "figures" / "demo" / data / "p_fast" / "positions.png").is_file()
        assert (out / "figures" / "demo" / data / "p_fast" / "layers_first.png").is_file()
        assert (out / "figures" / "demo" / data / "q_fast" / "qprobe.png").is_file()
    kept = fake_root / manifest(fake_root, "bioS_multi5_permute_fullname")["stages"]["probe/p_fast"]
    copied = out / "figures" / "demo" / "bioS_multi5_permute_fullname" / "p_fast" / "positions.png"
    assert copied.read_bytes() == (kept / "positions.png").read_bytes()  # the stage's own heatmap
    md = (out / "report.md").read_text()
    links = re.findall(r"\]\((figures/[^)]+)\)", md)
    images = re.findall(r"!\[[^]]*\]\((figures/[^)]+)\)", md)
    # the QA bars, 4 heatmaps per run (3 P, 1 Q) and one pretraining's curves per run, all inline
    assert links == images and len(images) == 1 + 2 * 4 + 2 and all((out / i).is_file() for i in images)
    for data in FAKE_DATASETS:
        curve = out / "figures" / "demo" / data / "training.png"
        assert curve.read_bytes()[:4] == b"\x89PNG" and f"]({curve.relative_to(out).as_posix()})" in md
    assert md.index("### Training curves") < md.index("### Probe heatmaps") < md.index("### Provenance")


def test_a_pretraining_without_a_loss_log_draws_no_curve_and_flags_nothing(fake_root):
    pretrain = fake_root / manifest(fake_root, "bioS_single")["stages"]["pretrain"]
    (pretrain / "metrics.jsonl").unlink()
    md, report = build_report(fake_root)
    assert not report.notes
    assert not (md.parent / "figures" / "demo" / "bioS_single" / "training.png").exists()
    assert (md.parent / "figures" / "demo" / "bioS_multi5_permute_fullname" / "training.png").is_file()


def test_spearman_is_reported_from_three_datasets(tmp_path):
    root = build_fake_root(tmp_path / "runs", datasets=(*FAKE_DATASETS, "bioS_single_fullname"), probes=False)
    out = write_report(root).parent
    rows = [r for r in results(out) if r["split"] == "test" and r["metric"] == "qa_exact_match"]
    means = [r for r in rows if r["attribute"] == "mean"]
    rho = spearman([float(r["value"]) for r in means], [float(r["paper_value"]) for r in means])
    assert f"(n=3): **{rho:.2f}**" in (out / "report.md").read_text()


def test_spearman_ranks_ties_by_their_mean():
    assert spearman([1, 2, 3], [10, 20, 30]) == pytest.approx(1)
    assert spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1)
    assert spearman([1, 2, 2, 3], [1, 3, 2, 4]) == pytest.approx(0.9486833, abs=1e-6)  # ranks 1 2.5 2.5 4
    assert spearman([5, 5, 5], [1, 2, 3]) != spearman([5, 5, 5], [1, 2, 3])  # nan: constant
    stats = pytest.importorskip("scipy.stats")
    x, y = [3.1, 9.7, 9.7, 50, 2.0, 41], [10, 4, 8, 90, 1, 40]
    assert spearman(x, y) == pytest.approx(stats.spearmanr(x, y).statistic)


def _delete_metrics(root, m):
    (root / m["stages"]["eval"] / "eval" / "metrics.json").unlink()
    return "eval/metrics.json is missing although the eval stage says done"


def _running(root, m):
    (root / m["stages"]["eval"] / "status.json").write_text(json.dumps({"status": "running"}))
    return "is 'running', not done"


def _no_folder(root, m):
    shutil.rmtree(root / m["stages"]["eval"])
    return "does not exist"


def _failed_pretrain(root, m):
    (root / m["stages"]["pretrain"] / "status.json").write_text(json.dumps({"status": "failed"}))
    return "pretrain stage pretrain/.* is 'failed'"


def _no_test_split(root, m):
    path = root / m["stages"]["eval"] / "eval" / "metrics.json"
    metrics = json.loads(path.read_text())
    del metrics["splits"]["test"]
    path.write_text(json.dumps(metrics))
    return "has no test split"


@pytest.mark.parametrize("damage", [_delete_metrics, _running, _no_folder, _failed_pretrain, _no_test_split])
def test_a_missing_or_unfinished_stage_is_flagged_never_reported(fake_root, damage):
    expected = damage(fake_root, manifest(fake_root, "bioS_single"))
    md, report = build_report(fake_root)
    out = md.parent
    rows = results(out)
    flagged = one(rows, run="bioS_single", split="test", metric="qa_exact_match", attribute="mean")
    assert flagged["value"] == "" and re.search(expected, flagged["note"])
    assert float(flagged["paper_value"]) == 9.7
    assert not [r for r in rows if r["run"] == "bioS_single" and r["metric"].startswith("qa") and r["value"]]
    fine = one(
        rows, run="bioS_multi5_permute_fullname", split="test", metric="qa_exact_match", attribute="mean"
    )
    assert fine["value"] and not fine["note"]
    md = (out / "report.md").read_text()
    assert "## Missing or unfinished" in md and re.search(expected, md)
    assert "| bioS_single | tiny | lora | ?/? | n/a | missing | 9.7 |  |" in md
    with pytest.raises(ReportError, match=expected):
        write_report(fake_root, strict=True)


def test_a_lost_probe_file_or_another_datasets_probe_is_flagged(fake_root):
    single, multi = manifest(fake_root, "bioS_single"), manifest(fake_root, "bioS_multi5_permute_fullname")
    (fake_root / single["stages"]["probe/p_fast"] / "probes.csv").unlink()
    multi["stages"]["probe/q_fast"] = single["stages"]["probe/q_fast"]  # wired to the wrong dataset
    save_manifest(fake_root, "bioS_multi5_permute_fullname", multi)
    md, report = build_report(fake_root)
    out = md.parent
    assert len(report.notes) == 2
    assert "probes.csv is missing" in report.notes[0] + report.notes[1]
    assert "probes data bioS_single, the manifest says bioS_multi5_permute_fullname" in "".join(report.notes)
    rows = results(out)
    assert one(rows, run="bioS_single", probe="p_fast", metric="probe")["value"] == ""
    assert not [r for r in rows if r["run"] == "bioS_single" and r["probe"] == "p_fast" and r["value"]]
    assert not [
        r
        for r in rows
        if r["run"] == "bioS_multi5_permute_fullname" and r["probe"] == "q_fast" and r["value"]
    ]
    assert "| bioS_single | p_fast | ours | ?/? | missing |" in (out / "report.md").read_text()


def test_mixed_training_reads_the_qar_the_manifest_names(fake_root):
    m = manifest(fake_root, "bioS_single")
    moved = Path("evaluate") / Path(m["stages"]["eval"]).name
    shutil.move(fake_root / m["stages"]["eval"], fake_root / moved)
    m.update(finetune=None, qa_ratio=0.2)
    m["stages"]["eval"] = moved.as_posix()
    m["paper"].update(qa="P3.1 Fig 10", qa_method="mixed training QAr=0.2")
    save_manifest(fake_root, "bioS_single", m)
    out = write_report(fake_root).parent
    rows = results(out)
    assert (
        float(
            one(rows, run="bioS_single", split="test", metric="qa_exact_match", attribute="mean")[
                "paper_value"
            ]
        )
        == 53.6
    )
    assert (
        one(rows, run="bioS_single", split="test", metric="qa_exact_match", attribute="major")["paper_value"]
        == ""
    )
    assert "| bioS_single | tiny | none | 0.2 |" in (out / "report.md").read_text()
    m["paper"]["qa_method"] = None
    save_manifest(fake_root, "bioS_single", m)
    with pytest.raises(
        ReportError, match="bioS_single.json: 'P3.1 Fig 10' reports bioS_single under several methods"
    ):
        write_report(fake_root)


def test_bad_roots_and_manifests_are_clear_errors(tmp_path, fake_root):
    with pytest.raises(ReportError, match="does not exist"):
        write_report(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ReportError, match="no run manifests under"):
        write_report(tmp_path / "empty")
    with pytest.raises(ReportError, match="no runs of experiment 'fig3_augmentation'.*found: demo"):
        write_report(fake_root, "fig3_augmentation")
    m = manifest(fake_root, "bioS_single")
    m["paper"]["qa"] = "P3.1 Fig 3"
    save_manifest(fake_root, "bioS_single", m)
    with pytest.raises(ReportError, match="bioS_single.json: unknown paper source 'P3.1 Fig 3'"):
        write_report(fake_root)
    (fake_root / "runs" / "demo" / "bioS_single.json").write_text("{not json")
    with pytest.raises(ReportError, match="bioS_single.json: not a readable JSON manifest"):
        write_report(fake_root)
    assert not (fake_root / "report").exists()  # nothing half-written


def test_out_is_replaced_whole_and_only_if_it_is_a_report(fake_root, tmp_path):
    out = write_report(fake_root).parent
    assert out == fake_root / "report"
    (out / "stale.png").write_bytes(b"x")
    write_report(fake_root)
    assert not (out / "stale.png").exists() and (out / "report.md").is_file()
    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("keep")
    with pytest.raises(ConfigError, match="is not an earlier report"):
        write_report(fake_root, out=other)
    assert (other / "notes.txt").read_text() == "keep"


def test_the_script_prints_the_report_or_one_line_error(fake_root, tmp_path):
    script = REPO / "scripts" / "report.py"
    out = tmp_path / "rep"
    r = run_in_fork(
        [script, f"root={fake_root}", "experiments=demo", f"out={out}"], cwd=tmp_path, timeout=120
    )
    assert r.returncode == 0, r.stderr
    assert "| bioS_single | tiny | lora |" in r.stdout and (out / "results.csv").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rep", "runs"]  # no hydra outputs/
    r = run_in_fork([script, f"root={tmp_path / 'none'}"], cwd=tmp_path, timeout=120)
    assert r.returncode == 2 and r.stderr.startswith("error: root=") and r.stderr.count("\n") == 1


def test_probe_only_experiments_and_grids_read_as_the_runner_writes_them(fake_root):
    m = manifest(fake_root, "bioS_single")
    probe_only = {
        **m,
        "experiment": "fig5_pprobe",
        "stages": {k: v for k, v in m["stages"].items() if k != "eval"},
    }
    (fake_root / "runs" / "fig5_pprobe").mkdir()
    (fake_root / "runs" / "fig5_pprobe" / "bioS_single.json").write_text(json.dumps(probe_only))
    for grid in ("lora_r-8", "lora_r-16"):  # two finetunes of one pretraining
        save_manifest(fake_root, f"bioS_single__{grid}", {**m, "run": f"bioS_single__{grid}", "grid": grid})
    md, report = build_report(fake_root)
    rows = results(md.parent)
    assert not report.notes
    assert not [r for r in rows if r["experiment"] == "fig5_pprobe" and r["metric"].startswith("qa")]
    assert one(
        rows, experiment="fig5_pprobe", metric="pprobe_first_token_acc", attribute="major", position="s0"
    )
    text = md.read_text()
    fig5 = text[text.index("## Experiment `fig5_pprobe`") :]
    assert "QA exact match" not in fig5 and "| bioS_single | p_fast | ours |" in fig5
    assert "| bioS_single (bioS_single__lora_r-8) | tiny | lora |" in text


def test_the_paper_keys_the_report_reads_are_the_ones_checked_at_plan_time():
    assert {"qa"} | {key for _, key in PROBE_METRICS.values()} == set(SOURCE_KEYS)


def test_wilson_matches_known_intervals():
    assert wilson(0.8, 10) == pytest.approx((0.4902, 0.9433), abs=1e-4)  # 8/10
    assert wilson(0.0, 10) == pytest.approx((0.0, 0.2775), abs=1e-4)  # never a point at 0%
    assert wilson(1.0, 10) == pytest.approx((0.7225, 1.0), abs=1e-4)
    assert wilson(0.5, 100) == pytest.approx((0.4038, 0.5962), abs=1e-4)
    with pytest.raises(ValueError, match="n >= 1"):
        wilson(0.5, 0)


def test_counts_and_intervals_are_in_results_and_report(fake_root):
    md, report = build_report(fake_root)
    rows = results(md.parent)
    assert list(rows[0]) == [*RESULT_COLUMNS, *STAT_COLUMNS]  # the new columns after the old ones
    for metric in ("qa_exact_match", "qa_majority", "qa_first_token"):
        for a, n in (("birth_city", 50), ("mean", 300)):  # 300 questions: 50 people x 6 attributes
            r = one(rows, run="bioS_single", split="test", metric=metric, attribute=a)
            low, high = wilson(float(r["value"]) / 100, n)
            assert int(r["n"]) == n
            assert float(r["ci_low"]) == pytest.approx(100 * low, abs=1e-3)
            assert float(r["ci_high"]) == pytest.approx(100 * high, abs=1e-3)
            assert float(r["ci_low"]) <= float(r["value"]) <= float(r["ci_high"])
    probe = one(rows, run="bioS_single", metric="pprobe_first_token_acc", attribute="major", position="s0")
    assert int(probe["n"]) == 50 and probe["ci_low"] and probe["ci_high"]
    assert all(r["n"] and r["ci_low"] and r["ci_high"] for r in rows if r["value"])  # every number here
    text = md.read_text()
    qa = one(rows, run="bioS_single", split="test", metric="qa_exact_match", attribute="university")
    mean = one(rows, run="bioS_single", split="test", metric="qa_exact_match", attribute="mean")
    line = next(x for x in text.splitlines() if x.startswith("| bioS_single | ours | 50 |"))
    assert interval(float(qa["value"]), 50) in line
    assert line.endswith(f"| {interval(float(mean['value']), 300)} |")
    majority = one(rows, run="bioS_single", split="test", metric="qa_majority", attribute="university")
    assert "|  | majority |  | " in text and interval(float(majority["value"]), 50) in text
    assert "the mean's interval is over all n x 6" in text and "95% Wilson interval" in text


def test_the_probe_tables_show_the_majority_and_the_controls(fake_root):
    md = write_report(fake_root)
    rows = results(md.parent)
    text = md.read_text()
    table = text[text.index("### P-probe, first token") : text.index("### P-probe, whole attribute")]
    for data in FAKE_DATASETS:
        where = dict(run=data, attribute="major", position="s0")
        ours = one(rows, metric="pprobe_first_token_acc", **where)
        control = one(rows, metric="pprobe_first_token_acc_shuffled", **where)
        majority = one(rows, metric="pprobe_first_token_majority", **where)
        assert int(control["n"]) == 50 and float(control["value"]) != float(ours["value"])
        for r in (ours, control, majority):
            assert interval(float(r["value"]), 50) in table
    # the fake probes ran one control of the two
    assert table.count("| shuffled labels |") == 2 and "untrained model" not in table
    assert table.count("| ours | 50/50 |") == 2  # P_train / P_test people of probes.csv


def _write_stage_files(root, m, people=None, steps=None):
    data, pretrain = root / m["stages"]["data"], root / m["stages"]["pretrain"]
    if people is not None:
        meta = json.loads((data / "meta.json").read_text())
        (data / "meta.json").write_text(json.dumps({**meta, "counts": {"people": people}}))
    if steps is not None:
        doc = {"kind": "pretrain", "config": {"model": {"name": m["model"]}, "train": {"steps": steps}}}
        (pretrain / "config.yaml").write_text(json.dumps(doc))  # YAML reads JSON


def test_each_experiment_states_its_setting_overrides_and_paper_gap(fake_root):
    text = write_report(fake_root).read_text()
    # the fake root's people (from the data stage's meta.json); its pretraining config names no steps
    assert "- scale tiny: 100 people, model `tiny`, ? pretraining steps\n" in text
    header = text.split("## Experiment")[1].split("### QA")[0]
    assert "overrides" not in header  # manifests filed before overrides were recorded
    assert "> **Not like for like with the paper**: 100 people (paper: 100,000); model tiny" in header
    for data in FAKE_DATASETS:
        m = manifest(fake_root, data)
        _write_stage_files(fake_root, m, steps=1000)
        save_manifest(fake_root, data, {**m, "overrides": ["data.n_people=100", "train.lr=0.003"]})
    text = write_report(fake_root).read_text()
    assert (
        "- scale tiny: 100 people, model `tiny`, 1,000 pretraining steps; overrides beyond scale tiny: "
        "`data.n_people=100`, `train.lr=0.003`\n" in text
    )
    m = manifest(fake_root, "bioS_single")
    save_manifest(fake_root, "bioS_single", {**m, "overrides": []})
    text = write_report(fake_root).read_text()  # two settings now: each names its runs
    assert "1,000 pretraining steps; overrides beyond scale tiny: none (bioS_single)\n" in text
    assert "`train.lr=0.003` (bioS_multi5_permute_fullname)\n" in text


def test_a_paper_sized_run_is_not_warned_unless_overridden(fake_root):
    for data in FAKE_DATASETS:
        m = {**manifest(fake_root, data), "scale": "paper", "model": "gpt2_rotary_124m"}
        _write_stage_files(fake_root, m, people=100_000, steps=80_000)
        save_manifest(fake_root, data, m)
    text = write_report(fake_root).read_text()
    assert "- scale paper: 100,000 people, model `gpt2_rotary_124m`, 80,000 pretraining steps\n" in text
    assert "Not like for like" not in text and "Check before comparing" not in text
    m = manifest(fake_root, "bioS_single")
    save_manifest(fake_root, "bioS_single", {**m, "overrides": ["finetune.train.steps=10"]})
    text = write_report(fake_root).read_text()
    assert "Not like for like" not in text and "> **Check before comparing**" in text


def test_a_celebrity_run_is_sized_against_the_paper_by_group(fake_root):
    sizes = (("bioS_single", 400, 200), ("bioS_multi5_permute_fullname", 200_000, 100_000))
    for data, people, celebrities in sizes:  # a tiny celebrity run and a paper-sized one
        m = {**manifest(fake_root, data), "scale": "paper", "model": "gpt2_rotary_124m"}
        _write_stage_files(fake_root, m, people=people, steps=80_000)
        meta_path = fake_root / m["stages"]["data"] / "meta.json"
        meta = json.loads(meta_path.read_text())
        groups = {"celebrity": celebrities, "minority": people - celebrities}
        meta["counts"]["groups"] = {g: {"people": n} for g, n in groups.items()}
        meta_path.write_text(json.dumps(meta))
        save_manifest(fake_root, data, m)
    text = write_report(fake_root).read_text()
    assert "- scale paper: 400 people (200 of them celebrities), model `gpt2_rotary_124m`" in text
    gaps = [line for line in text.splitlines() if line.startswith("> **Not like for like")]
    assert gaps and all("200 minority people + 200 celebrities (paper: 100,000 + 100,000)" in g for g in gaps)
    assert all("100,000 minority" not in g and "people (paper: 100,000)" not in g for g in gaps)


def test_the_provenance_table_lists_each_stage_once(fake_root):
    m = manifest(fake_root, "bioS_single")
    rel, q_fast = m["stages"]["pretrain"], m["stages"]["probe/q_fast"]
    (fake_root / rel / "status.json").write_text(json.dumps({
        **status(fake_root, rel), "git_commit": "0123456789abcdef+dirty", "device": "cuda: NVIDIA H200 x1",
        "seconds": 5400.0,
    }))  # fmt: skip
    (fake_root / q_fast / "status.json").write_text(json.dumps({"status": "running"}))
    md, report = build_report(fake_root)
    table = md.read_text().split("### Provenance")[1]
    pretrain = f"| pretrain | bioS_single | `{rel}` | 0123456789+dirty | cuda: NVIDIA H200 x1 | 1 h 30 min |"
    assert pretrain in table
    assert f"| probe q_fast | bioS_single | `{q_fast}` | ? | ? | ? (running) |" in table
    assert "is 'running', not done" in report.notes[0]  # still flagged at the top
    # 6 stages per run (data, corpus, pretrain, eval, two probes), the header line before them
    assert table.count("\n| ") == 1 + 2 * 6 and "each counted once" in table
    other = manifest(fake_root, "bioS_multi5_permute_fullname")
    other["stages"]["data"] = m["stages"]["data"]  # as two runs of one dataset share their data stage
    save_manifest(fake_root, "bioS_multi5_permute_fullname", other)
    table = write_report(fake_root).read_text().split("### Provenance")[1]
    assert f"| data | bioS_multi5_permute_fullname, bioS_single | `{m['stages']['data']}` |" in table
    assert table.count("\n| ") == 1 + 2 * 6 - 1


def test_the_report_only_reads_the_stage_folders(fake_root):
    def snapshot():
        return {
            p.relative_to(fake_root): p.read_bytes()
            for p in sorted(fake_root.rglob("*"))
            if p.is_file() and "report" not in p.relative_to(fake_root).parts
        }

    before = snapshot()
    write_report(fake_root)
    assert snapshot() == before


def test_the_probe_reading_states_the_s0_means_of_ours_and_the_majority(fake_root):
    md = write_report(fake_root)
    rows = results(md.parent)
    text = md.read_text()
    reading = text[text.index("### Where the attributes are stored") : text.index("### P-probe, first token")]
    later = ("birth_city", "university", "major", "company", "company_city")
    for data in FAKE_DATASETS:
        where = dict(run=data, position="s0")
        ours = [
            float(one(rows, metric="pprobe_first_token_acc", attribute=a, **where)["value"]) for a in later
        ]
        majority = [float(one(rows, metric="pprobe_first_token_majority", attribute=a, **where)["value"])
                    for a in later]  # fmt: skip
        line = next(ln for ln in reading.splitlines() if ln.startswith(f"- `{data}"))
        assert f"at s0 {sum(ours) / 5:.1f}% on average (majority {sum(majority) / 5:.1f}%" in line


def test_a_probe_preset_s_table_follows_its_kind_not_its_name(fake_root):
    """Presets may be named anything (linear_s0, on_the_name): the P and Q tables and the P-probe
    reading take each from its kind (probes.csv, the manifest's probe_kinds, the stage's config)."""
    for path in (fake_root / "runs" / "demo").glob("*.json"):
        manifest = json.loads(path.read_text())
        stages = manifest["stages"]
        stages["probe/linear_s0"], stages["probe/on_the_name"] = (
            stages.pop("probe/p_fast"),
            stages.pop("probe/q_fast"),
        )
        path.write_text(json.dumps(manifest))
    # a lost probes.csv: its kind comes from the manifest
    single = json.loads((fake_root / "runs" / "demo" / "bioS_single.json").read_text())
    single["probe_kinds"] = {"linear_s0": "p_fast", "on_the_name": "q_fast"}
    (fake_root / "runs" / "demo" / "bioS_single.json").write_text(json.dumps(single))
    (fake_root / single["stages"]["probe/on_the_name"] / "probes.csv").unlink()
    text = write_report(fake_root).read_text()
    p_table = text[text.index("### P-probe, first token") : text.index("### P-probe, whole attribute")]
    q_table = text[text.index("### Q-probe, first token") : text.index("### Q-probe, whole attribute")]
    assert p_table.count("| linear_s0 | ours |") == 2 and "on_the_name" not in p_table
    assert "| on_the_name | ours | ?/? |" in q_table  # the lost one, listed where its kind belongs
    assert "| on_the_name | ours |" in q_table.replace("| ?/? |", "", 1) and "linear_s0" not in q_table
    assert "(linear_s0): the five attributes after birth date at s0" in text
