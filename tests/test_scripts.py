"""The command-line entry points, run as a user runs them."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from biolab.data.check import check_dataset

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.slow  # subprocesses: each starts Python, torch and Hydra


def run(*args, cwd=None):
    return subprocess.run(
        [sys.executable, str(ROOT / "scripts" / args[0]), *args[1:]],
        capture_output=True, text=True, cwd=cwd or ROOT, timeout=300,
    )  # fmt: skip


def test_generate_writes_a_sound_dataset_and_prints_a_summary(tmp_path):
    out = tmp_path / "data"
    r = run(
        "generate.py",
        "data=bioS_multi2_permute_fullname",
        "data.n_people=40",
        "data.seed=3",
        f"out={out}",
        "progress=false",
    )
    assert r.returncode == 0, r.stderr
    assert "people   40 (20 train / 20 test)" in r.stdout and "bios     80" in r.stdout
    problems, stats = check_dataset(out)
    assert problems == [] and stats["bios"] == 80
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]  # no hydra outputs/ etc.


def test_help_lists_presets():
    r = run("generate.py", "--help")
    assert r.returncode == 0
    assert "bioS_multi5_permute_fullname" in r.stdout and "bioR_single" in r.stdout
    assert "_base" not in r.stdout and "out: ???" in r.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["data=nope"], "unknown data preset 'nope'; choose from:"),
        (["data.mutli=2"], "unknown key 'data.mutli'; valid keys under data:"),
        (["data.n_people=1"], "data.n_people must be >= 2"),
        (["data.n_people=200000000"], "exceeds the 160000000 distinct full names"),
        (["data.multi=0"], "data.multi must be >= 1"),
        ([], "out=DIR is required"),
    ],
)
def test_bad_input_is_one_line_nonzero_and_writes_nothing(tmp_path, args, message):
    out = tmp_path / "data"
    extra = [] if not args else [f"out={out}"]
    r = run("generate.py", *args, *extra, "progress=false", cwd=tmp_path)
    assert r.returncode != 0
    assert r.stderr.strip().count("\n") == 0 and r.stderr.startswith("error: "), r.stderr
    assert message in r.stderr
    assert list(tmp_path.iterdir()) == []


def test_a_non_empty_out_is_kept_without_overwrite(tmp_path):
    out = tmp_path / "data"
    out.mkdir()
    (out / "precious.txt").write_text("keep")
    r = run("generate.py", "data.n_people=10", f"out={out}", "progress=false")
    assert r.returncode != 0 and "pass overwrite=true" in r.stderr
    assert [p.name for p in out.iterdir()] == ["precious.txt"]
    r = run("generate.py", "data.n_people=10", f"out={out}", "overwrite=true", "progress=false")
    assert r.returncode == 0, r.stderr
    assert not (out / "precious.txt").exists() and (out / "meta.json").exists()


def test_bench_runs_and_reports_json():
    r = run("bench.py", "data", "--data", "bioR_single", "--n-people", "50")
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout)
    assert result["bios"] == 50 and result["seconds"] > 0 and result["peak_rss_mb"]["self"] > 0


@pytest.mark.parametrize(
    ("script", "args", "message"),
    [
        ("finetune.py", ["out=x"], "pretrained=... is required"),
        ("finetune.py", ["pretrained=/nonexistent", "out=x"], "is not a model folder"),
        ("finetune.py", ["pretrained=p", "out=x", "finetune=qlora"], "unknown finetune preset 'qlora'"),
        ("evaluate.py", ["data_dir=d"], "model_dir=... is required"),
        ("evaluate.py", ["model=m", "data_dir=d"], "model= is now model_dir= "),
        ("evaluate.py", ["model_dir=m", "data_dir=d", "split=dev"], "split must be train, test or both"),
        ("evaluate.py", ["model_dir=m", "data_dir=/nonexistent"], "not a biolab dataset"),
        ("probe.py", ["data_dir=d", "out=o"], "model_dir=... is required"),
        ("probe.py", ["model=m", "data_dir=d", "out=o"], "model= is now model_dir= "),
        (
            "probe.py",
            ["model_dir=m", "data_dir=d", "out=o", "probe=x_probe"],
            "unknown probe preset 'x_probe'",
        ),
        ("probe.py", ["model_dir=m", "data_dir=d", "out=o", "probe.split=half"], "probe.split must be"),
        ("probe.py", ["model_dir=m", "data_dir=/nonexistent", "out=o"], "not a biolab dataset"),
        ("report.py", ["experiment=demo"], "experiment= is now experiments= "),
        ("run.py", ["tasks32.modes=[mixed]"], "tasks32.modes= is now manipulation.modes= "),
    ],
)
def test_finetune_and_evaluate_bad_input(tmp_path, script, args, message):
    r = run(script, *args, cwd=tmp_path)
    assert r.returncode != 0 and r.stderr.startswith("error: ") and message in r.stderr, r.stderr
    assert list(tmp_path.iterdir()) == []


SCRIPTS = ["pretrain.py", "finetune.py", "evaluate.py", "probe.py", "run.py", "report.py"]


@pytest.mark.parametrize("script", SCRIPTS)
def test_every_script_has_help(script):
    r = run(script, "--help")
    assert r.returncode == 0 and "Config (override any key with key=value)" in r.stdout, r.stderr


def test_pretrain_then_finetune_grid_then_evaluate_then_probe(tmp_path):
    small = ["model.n_layer=1", "model.n_head=2", "model.d_model=32", "train.ctx=32", "train.batch_size=4",
             "train.steps=3", "train.eval_every=0", "train.wandb=disabled", "data.n_people=20",
             "tokenizer.vocab_size=300", "progress=false"]  # fmt: skip
    r = run("pretrain.py", *small, f"out={tmp_path / 'pre'}")
    assert r.returncode == 0, r.stderr
    r = run("finetune.py", f"pretrained={tmp_path / 'pre' / 'model'}", f"out={tmp_path / 'ft'}",
            "finetune.train.steps=2", "finetune.train.batch_size=4", "finetune.train.wandb=disabled",
            "finetune.embed_r=8", "grid={finetune.lora_r: [2, 4]}", "progress=false")  # fmt: skip
    assert r.returncode == 0, r.stderr
    grid = json.loads((tmp_path / "ft" / "grid.json").read_text())
    assert set(grid["runs"]) == {"lora_r-2", "lora_r-4"} and grid["selected_on"] == "P_test mean exact match"
    for name in grid["runs"]:
        assert (tmp_path / "ft" / "grid" / name / "eval" / "metrics.json").is_file()
    model = tmp_path / "ft" / "grid" / grid["best"] / "model"
    r = run("evaluate.py", f"model_dir={model}", f"data_dir={tmp_path / 'pre' / 'data'}", "split=test",
            f"out={tmp_path / 'ev'}")  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "exact_match" in r.stdout
    metrics = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert list(metrics["splits"]) == ["test"]
    r = run("probe.py", f"model_dir={tmp_path / 'pre' / 'model'}", f"data_dir={tmp_path / 'pre' / 'data'}",
            "probe=q_fast", "probe.linear.epochs=2", f"out={tmp_path / 'q'}")  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "q" / "probes.csv").is_file() and (tmp_path / "q" / "qprobe.png").is_file()


def test_run_sweep_shares_stages_and_ends_in_one_report(tmp_path):
    tiny = ["data.n_people=16", "train.steps=2", "train.batch_size=2", "train.ctx=32", "model.n_layer=1",
            "model.d_model=16", "model.n_head=2", "tokenizer.vocab_size=300", "finetune.train.steps=1",
            "finetune.train.batch_size=2", "probes=[]", "progress=false"]  # fmt: skip
    tiny.append(f"root={tmp_path / 'root'}")
    sweep = ["-m", "experiment=fig3_augmentation", "data=bioS_single,bioS_multi2"]
    r = run("run.py", *sweep, *tiny, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    runs = sorted(p.name for p in (tmp_path / "root" / "runs" / "fig3_augmentation").iterdir())
    assert runs == ["bioS_multi2.json", "bioS_single.json"]
    assert len(list((tmp_path / "root" / "pretrain").glob("[!.]*"))) == 2
    report = (tmp_path / "root" / "report" / "report.md").read_text()
    assert "bioS_single" in report and "bioS_multi2" in report
    r = run("run.py", "experiment=fig3_augmentation", "data=bioS_single", *tiny, cwd=tmp_path)
    assert r.returncode == 0 and "building" not in r.stdout and "reused" in r.stdout, r.stdout[-2000:]
    r = run("run.py", "experiment=fig9_nothing", *tiny, cwd=tmp_path)
    assert r.returncode != 0 and "unknown experiment preset 'fig9_nothing'" in r.stderr
    r = run("run.py", "scale=huge", *tiny, cwd=tmp_path)
    assert r.returncode != 0 and "unknown scale preset 'huge'" in r.stderr
