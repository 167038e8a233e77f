"""The report reads a stage root (the fake one of conftest) and never shows a number from the wrong place."""

import csv
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import FAKE_DATASETS, build_fake_root

from biolab.data.people import ATTRIBUTES
from biolab.errors import ConfigError, ReportError
from biolab.paper import SOURCE_KEYS, paper_value
from biolab.report.collect import PROBE_METRICS, QA_KEYS
from biolab.report.rows import COLUMNS, spearman
from biolab.report.write import build_report, write_report

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


def probes(root, data, probe):
    with open(root / manifest(root, data)["stages"]["probe"][probe] / "probes.csv", newline="") as f:
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
    assert (
        "| bioS_single | tiny | lora | " in md and f"| {ours:.1f} | 9.7 | {ours - 9.7:+.1f} | {FIG3} |" in md
    )
    assert "| 96.2 |" in md and "needs >= 3 datasets" in md and "Missing" not in md


def test_the_figures_are_written_and_linked(tmp_path):
    # the multi5 probe stages kept their heatmaps (copied), the single ones did not (drawn from probes.csv)
    fake_root = build_fake_root(tmp_path / "runs", heatmaps=("bioS_multi5_permute_fullname",))
    out = write_report(fake_root).parent
    assert (out / "figures" / "demo" / "qa_vs_paper.png").read_bytes()[:4] == b"\x89PNG"
    for data in FAKE_DATASETS:
        assert (out / "figures" / "demo" / data / "p_fast" / "positions.png").is_file()
        assert (out / "figures" / "demo" / data / "p_fast" / "layers_first.png").is_file()
        assert (out / "figures" / "demo" / data / "q_fast" / "qprobe.png").is_file()
    kept = fake_root / manifest(fake_root, "bioS_multi5_permute_fullname")["stages"]["probe"]["p_fast"]
    copied = out / "figures" / "demo" / "bioS_multi5_permute_fullname" / "p_fast" / "positions.png"
    assert copied.read_bytes() == (kept / "positions.png").read_bytes()  # the stage's own heatmap
    links = re.findall(r"\]\((figures/[^)]+)\)", (out / "report.md").read_text())
    assert len(links) == 1 + 2 * 4 and all((out / link).is_file() for link in links)


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
    assert "| bioS_single | tiny | lora | n/a | missing | 9.7 |  |" in md
    with pytest.raises(ReportError, match=expected):
        write_report(fake_root, strict=True)


def test_a_lost_probe_file_or_another_datasets_probe_is_flagged(fake_root):
    single, multi = manifest(fake_root, "bioS_single"), manifest(fake_root, "bioS_multi5_permute_fullname")
    (fake_root / single["stages"]["probe"]["p_fast"] / "probes.csv").unlink()
    multi["stages"]["probe"]["q_fast"] = single["stages"]["probe"]["q_fast"]  # wired to the wrong dataset
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
    assert "| bioS_single | p_fast | ours | missing |" in (out / "report.md").read_text()


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
    script = [sys.executable, str(REPO / "scripts" / "report.py")]
    out = tmp_path / "rep"
    r = subprocess.run([*script, f"root={fake_root}", "experiments=demo", f"out={out}"], capture_output=True,
                       text=True, cwd=tmp_path, timeout=120)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "| bioS_single | tiny | lora |" in r.stdout and (out / "results.csv").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rep", "runs"]  # no hydra outputs/
    r = subprocess.run([*script, f"root={tmp_path / 'none'}"], capture_output=True, text=True, cwd=tmp_path,
                       timeout=120)  # fmt: skip
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
