"""The figures say what they show: the QA heatmap's colour scale, majority baseline and missing cells,
the probe heatmaps' baselines and controls, thinned ticks and the note on blank positions, and the
notebook's Q-probe section (its table, or the command that adds a Q-probe)."""

import csv
import json
import shutil
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pytest

from biolab.data.people import ATTRIBUTES
from biolab.probe import plots as probe_plots
from biolab.report import plots as report_plots
from biolab.report.collect import collect

NOTEBOOK = Path(__file__).resolve().parent.parent / "notebooks" / "probe_heatmaps.py"


@pytest.fixture
def figures(monkeypatch):
    """The figures the plot functions draw, kept open (they close them after saving)."""
    close, kept = plt.close, []
    monkeypatch.setattr(plt, "close", lambda fig=None: kept.append(fig))
    yield kept
    for fig in kept:
        close(fig)


def texts(fig) -> str:
    """Every string drawn (axes texts, tick labels, titles, legends), each line break a space."""
    return " | ".join(" ".join(t.get_text().split()) for t in fig.findobj(plt.Text) if t.get_text())


def pixels(ax) -> np.ndarray:
    """An axes' heatmap values, nan where nothing is drawn."""
    return np.ma.filled(np.ma.asarray(ax.images[0].get_array(), dtype=float), np.nan)


def token_rows(n_pos=128, n_layers=5, reach=90, controls=("shuffled",)):
    """p_fast token sweep rows: every test entry reaches position ``reach``, fewer later."""
    rows = []
    for control in ("none", *controls):
        for layer in range(n_layers):
            for p in range(n_pos):
                for a in ATTRIBUTES:
                    rows.append({"model": "m", "data": "bioS_single", "probe": "p_fast", "control": control,
                                 "layer": layer, "position": str(p), "position_kind": "token", "attribute": a,
                                 "task": "first", "train_acc": 0.9, "test_acc": 0.3, "majority": 0.1,
                                 "n_train": 100, "n": 100 if p < reach else 5, "seen": min(1.0, p / 100),
                                 })  # fmt: skip
    return rows


def special_rows(controls=("shuffled", "random_init")):
    rows = []
    for control in ("none", *controls):
        for layer in range(3):
            for k in range(6):
                for j, a in enumerate(ATTRIBUTES):
                    rows.append({"model": "m", "data": "bioS_single", "probe": "p_fast", "control": control,
                                 "layer": layer, "position": f"s{k}", "position_kind": "special",
                                 "attribute": a, "task": "first", "train_acc": 0.9, "majority": 0.05 * j,
                                 "test_acc": 0.8 if control == "none" else 0.02 * (k + 1),
                                 "n_train": 50, "n": 50, "seen": 1.0 if k > j else 0.0})  # fmt: skip
    return rows


def test_the_qa_figure_is_a_heatmap_with_the_majority_baseline(fake_root, tmp_path, figures):
    report = collect(fake_root)
    labels, mat, ours, means = report_plots.qa_grid(report, "demo")
    assert labels[-2:] == ["majority baseline: ours (mean of 2 runs)", "majority baseline: paper"]
    assert mat.shape == (2 * len(means) + 2, len(ATTRIBUTES) + 1) and ours[:2] == [True, False]
    # ours: the mean of the runs' own majority rows; the paper's: its baseline row
    majority = [[r["value"] for r in report.rows if r["run"] == m["run"] and r["metric"] == "qa_majority"
                 and r["split"] == "test" and r["attribute"] == "company_city"] for m in means]  # fmt: skip
    assert mat[-2, ATTRIBUTES.index("company_city")] == pytest.approx(np.mean(majority))
    assert mat[-1, ATTRIBUTES.index("company_city")] == 13.7
    path = report_plots.plot_qa_vs_paper(report, "demo", tmp_path / "qa.png")
    assert path.read_bytes()[:4] == b"\x89PNG"
    (fig,) = figures
    heat = fig.axes[0]
    assert heat.images and heat.images[0].get_clim() == (0, 100)  # one colour scale, 0 to 100%
    assert any(a.get_label() == "<colorbar>" for a in fig.axes)
    assert [t.get_text() for t in heat.get_xticklabels()] == [*probe_plots.SHORT.values(), "mean"]
    drawn = texts(fig)
    assert "majority baseline: paper" in drawn and "compare direction, not level" in drawn
    assert f"| {mat[0, -1]:.0f} |" in drawn


def test_a_run_we_could_not_read_is_marked_missing_not_drawn_as_zero(fake_root, tmp_path, figures):
    for m in (fake_root / "runs" / "demo").glob("bioS_single.json"):
        eval_dir = fake_root / json.loads(m.read_text())["stages"]["eval"]
        (eval_dir / "eval" / "metrics.json").unlink()
    report = collect(fake_root)
    report_plots.plot_qa_vs_paper(report, "demo", tmp_path / "qa.png")
    drawn = texts(figures[0]).split(" | ")
    assert drawn.count("missing") == len(ATTRIBUTES) + 1  # every cell of that run's row


def test_layer_panels_thin_their_ticks_and_say_why_positions_are_blank(tmp_path, figures):
    path = probe_plots.plot_layers(token_rows(), tmp_path / "layers.png", "first", "t")
    assert path.is_file()
    (fig,) = figures
    panels = [a for a in fig.axes if a.images]
    assert len(panels) == len(ATTRIBUTES)
    bottom = panels[-1]
    fig.canvas.draw()
    shown = [t for t in bottom.get_xticklabels() if t.get_text() and t.get_visible()]
    assert 4 <= len(shown) <= 12  # 128 positions: every 16th, not every one
    for ax in panels[:-1]:  # one shared axis: the labels sit under the bottom panel only
        assert not [t for t in ax.get_xticklabels() if t.get_text() and t.get_visible()]
    assert len(panels[0].get_yticks()) <= 5
    image = pixels(panels[0])
    assert np.isnan(image[:, 90:]).all() and not np.isnan(image[:, :90]).any()
    drawn = texts(fig)
    assert f"fewer than {probe_plots.MIN_ROWS} test entries" in drawn and "~90" in drawn
    assert "majority 10%" in drawn


def test_the_position_heatmap_shows_the_majority_the_controls_and_the_hatch_key(tmp_path, figures):
    probe_plots.plot_positions(special_rows(), tmp_path / "positions.png", "bioS_single")
    (fig,) = figures
    base = next(a for a in fig.axes if [t.get_text() for t in a.get_yticklabels()][:1] == ["majority class"])
    assert [t.get_text() for t in base.get_yticklabels()] == [
        "majority class", "shuffled labels (max)", "random-init model (max)"]  # fmt: skip
    values = pixels(base)
    assert values[0] == pytest.approx([5 * j for j in range(6)])  # the majority, per attribute
    assert values[1] == pytest.approx([12] * 6)  # a control's best position (s5: 0.02 * 6)
    drawn = texts(fig)
    assert probe_plots.HATCH_NOTE in drawn
    hatched = [p for a in fig.axes for p in a.patches if p.get_hatch() == "//"]
    assert len(hatched) == 15  # the cells after their attribute: k > j


def test_without_controls_the_position_heatmap_shows_the_majority_alone(tmp_path, figures):
    probe_plots.plot_positions(special_rows(controls=()), tmp_path / "positions.png")
    labels = [[t.get_text() for t in a.get_yticklabels()] for a in figures[0].axes]
    assert ["majority class"] in labels


def test_the_q_probe_heatmap_carries_baselines_and_the_papers_rows(fake_root, tmp_path, figures):
    rows = []
    for m in (fake_root / "runs" / "demo").glob("bioS_single.json"):
        folder = fake_root / json.loads(m.read_text())["stages"]["probe/q_fast"]
        rows = list(csv.DictReader(open(folder / "probes.csv")))
    paper = {"paper": {("company_city", "first"): 13.1}}
    probe_plots.plot_query(rows, tmp_path / "q.png", "bioS_single", paper=paper)
    (fig,) = figures
    base = next(a for a in fig.axes if "paper" in [t.get_text() for t in a.get_yticklabels()])
    labels = [t.get_text() for t in base.get_yticklabels()]
    assert labels == ["majority class", "shuffled labels", "paper"]
    values = pixels(base)
    cols = [t.get_text() for t in base.get_xticklabels()]
    assert values[-1][cols.index("ccity\nfirst")] == 13.1
    assert np.isnan(values[-1][cols.index("bdate\nfirst")])  # not reported: blank, not 0
    assert "end token" in texts(fig)


@pytest.mark.slow  # a Jupyter kernel
def test_the_notebook_says_what_to_run_without_a_q_probe(fake_root, tmp_path, monkeypatch):
    import jupytext
    from nbclient import NotebookClient

    for m in (fake_root / "runs" / "demo").glob("*.json"):
        manifest = json.loads(m.read_text())
        shutil.rmtree(fake_root / manifest["stages"].pop("probe/q_fast"))
        m.write_text(json.dumps(manifest))
    monkeypatch.setenv("BIOLAB_ROOT", str(fake_root))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    nb = jupytext.read(NOTEBOOK)
    NotebookClient(
        nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": tmp_path}}
    ).execute()
    outputs = [o for c in nb.cells for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    printed = "".join(o.get("text", "") for o in outputs if o.get("output_type") == "stream")
    assert "No Q-probe for" in printed and "python scripts/run.py experiment=demo" in printed
    command = printed.split("python scripts/run.py")[1].splitlines()[0]
    # q_fast added to the probes, or the experiment runs it already and the filed run is replaced
    assert "q_fast" in command or "replace_runs=true" in command
