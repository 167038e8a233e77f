"""The command-line entry points, run as a user runs them."""

import csv
import json
import os
import re
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from conftest import run_in_fork

from biolab.cli import SUBMITIT, plugin_installed
from biolab.data.check import check_dataset
from biolab.pipeline.plan import run_name, run_overrides

ROOT = Path(__file__).resolve().parent.parent
TINY = ["data.n_people=16", "train.steps=2", "train.batch_size=2", "train.ctx=32", "model.n_layer=1",
        "model.d_model=16", "model.n_head=2", "tokenizer.vocab_size=300", "finetune.train.steps=1",
        "finetune.train.batch_size=2", "probes=[]", "progress=false"]  # fmt: skip
LR_SWEEP = ["-m", "experiment=demo", "data=bioS_single", "finetune.train.lr=1e-3,3e-4"]  # the sweep
STAMP = r"\d{4}-\d\d-\d\d_\d\d-\d\d-\d\d"  # a sweep's folder under ROOT/multirun

pytestmark = pytest.mark.slow  # subprocesses: each starts Python, torch and Hydra


def run(*args, cwd=None, env=None, fresh=False):
    """A script run as its own process: forked from this one (torch and Hydra imported already), or
    ``fresh``, a new interpreter (for what only matters at start-up, like PYTHONPATH)."""
    if fresh:
        argv = [sys.executable, str(ROOT / "scripts" / args[0]), *args[1:]]
        return subprocess.run(argv, capture_output=True, text=True, cwd=cwd or ROOT, timeout=300, env=env)
    return run_in_fork([ROOT / "scripts" / args[0], *args[1:]], cwd=cwd or ROOT, env=env, timeout=300)


def run_all(calls: list[tuple[list[str], Path | None]]) -> list[subprocess.CompletedProcess]:
    """``run`` for many (args, cwd) at once, one process per core: each spends seconds importing
    torch and Hydra before its one-line answer, time the cores can share."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with ThreadPoolExecutor(os.cpu_count() or 1) as pool:
        return list(pool.map(lambda c: run(*c[0], cwd=c[1], env=env), calls))


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
    # overwrite replaces a dataset, never a folder of the user's (it used to delete precious.txt)
    r = run("generate.py", "data.n_people=10", f"out={out}", "overwrite=true", "progress=false")
    assert r.returncode == 2 and "is not a dataset folder" in r.stderr and r.stderr.count("\n") == 1, r.stderr
    assert [p.name for p in out.iterdir()] == ["precious.txt"]
    (out / "precious.txt").unlink()
    assert run("generate.py", "data.n_people=10", f"out={out}", "progress=false").returncode == 0
    r = run("generate.py", "data.n_people=12", f"out={out}", "overwrite=true", "progress=false")
    assert r.returncode == 0, r.stderr
    assert '"n_people": 12' in (out / "meta.json").read_text()


def test_bench_runs_and_reports_json():
    r = run("bench.py", "data", "--data", "bioR_single", "--n-people", "50")
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout)
    assert result["bios"] == 50 and result["seconds"] > 0 and result["peak_rss_mb"]["self"] > 0


BAD_INPUT = [
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
]  # fmt: skip


def test_bad_input_is_one_line_before_any_work(tmp_path):
    folders = [tmp_path / str(i) for i in range(len(BAD_INPUT))]
    for folder in folders:
        folder.mkdir()
    results = run_all(
        [([script, *args], folder) for (script, args, _), folder in zip(BAD_INPUT, folders, strict=True)]
    )
    for (script, args, message), folder, r in zip(BAD_INPUT, folders, results, strict=True):
        case = f"{script} {' '.join(args)}"
        assert r.returncode != 0 and r.stderr.startswith("error: ") and message in r.stderr, (case, r.stderr)
        assert list(folder.iterdir()) == [], case


SCRIPTS = ["pretrain.py", "finetune.py", "evaluate.py", "probe.py", "run.py", "report.py", "capacity.py"]


def test_every_script_has_help():
    for script, r in zip(SCRIPTS, run_all([([s, "--help"], None) for s in SCRIPTS]), strict=True):
        assert r.returncode == 0 and "Config (override any key with key=value)" in r.stdout, (
            script,
            r.stderr,
        )


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
    # another dataset's people are refused (the adapter answers for its base model), or scored on request
    r = run("generate.py", "data=bioS_multi2", "data.n_people=20", f"out={tmp_path / 'other'}")
    assert r.returncode == 0, r.stderr
    other = [f"model_dir={model}", f"data_dir={tmp_path / 'other'}", "split=test", f"out={tmp_path / 'ev2'}"]
    damaged = tmp_path / "damaged"  # a damaged dataset is refused before work
    shutil.copytree(tmp_path / "other", damaged)
    with open(damaged / "qa.jsonl", "a") as f:
        f.write("{}\n")
    on_damaged = ["evaluate.py", *other[:1], f"data_dir={damaged}", "allow_other_data=true"]
    mixed, broken = run_all([(["evaluate.py", *other], None), (on_damaged, None)])
    assert mixed.returncode == 2 and "not on data_dir's 'bioS_multi2'" in mixed.stderr, mixed.stderr
    assert mixed.stderr.count("\n") == 1 and not (tmp_path / "ev2").exists()  # allow_other_data: test_model
    assert broken.returncode == 2 and "sha256 mismatch" in broken.stderr, broken.stderr
    r = run("probe.py", f"model_dir={tmp_path / 'pre' / 'model'}", f"data_dir={tmp_path / 'pre' / 'data'}",
            "probe=q_fast", "probe.linear.epochs=2", f"out={tmp_path / 'q'}")  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "q" / "probes.csv").is_file() and (tmp_path / "q" / "qprobe.png").is_file()


def test_run_sweep_shares_stages_and_ends_in_one_report(tmp_path):
    tiny = [*TINY, f"root={tmp_path / 'root'}"]
    sweep = ["-m", "experiment=fig3_augmentation", "data=bioS_single,bioS_multi2"]
    r = run("run.py", *sweep, *tiny, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    runs = sorted(p.name for p in (tmp_path / "root" / "runs" / "fig3_augmentation").glob("*.json"))
    assert runs == [f"{run_name(d, run_overrides(tiny))}.json" for d in ("bioS_multi2", "bioS_single")]
    assert len(list((tmp_path / "root" / "pretrain").glob("[!.]*"))) == 2
    report = (tmp_path / "root" / "report" / "report.md").read_text()
    assert "bioS_single" in report and "bioS_multi2" in report
    r = run("run.py", "experiment=fig3_augmentation", "data=bioS_single", *tiny, cwd=tmp_path)
    assert r.returncode == 0 and "building" not in r.stdout and "reused" in r.stdout, r.stdout[-2000:]
    r = run("run.py", "experiment=fig9_nothing", *tiny, cwd=tmp_path)
    assert r.returncode != 0 and "unknown experiment preset 'fig9_nothing'" in r.stderr
    r = run("run.py", "scale=huge", *tiny, cwd=tmp_path)
    assert r.returncode != 0 and "unknown scale preset 'huge'" in r.stderr


def lr_names() -> list[str]:
    """The issue's two runs: one per learning rate, named as Hydra writes a sweep job's value."""
    return [
        run_name("bioS_single", run_overrides([*TINY, f"finetune.train.lr={lr}"]))
        for lr in ("0.001", "0.0003")
    ]


def stage_folders(root: Path) -> set[Path]:
    return {p for p in root.glob("*/[!.]*") if p.parent.name not in ("runs", "report", "multirun")}


@pytest.fixture(scope="module")
def lr_root(tmp_path_factory):
    """A root after the issue's sweep: two finetunes of one pretraining."""
    tmp = tmp_path_factory.mktemp("lr")
    r = run("run.py", *LR_SWEEP, *TINY, f"root={tmp / 'root'}", cwd=tmp)
    assert r.returncode == 0, r.stderr[-2000:]
    return tmp / "root"


def test_an_lr_sweep_files_a_run_per_finetune_and_reports_both(lr_root):
    manifests = {p.stem: json.loads(p.read_text()) for p in (lr_root / "runs" / "demo").glob("*.json")}
    assert sorted(manifests) == sorted(lr_names())
    assert len({m["stages"]["eval"] for m in manifests.values()}) == 2
    assert len({m["stages"]["pretrain"] for m in manifests.values()}) == 1
    overrides = manifests[lr_names()[0]]["overrides"]
    assert "finetune.train.lr=0.001" in overrides and "data.n_people=16" in overrides
    assert not any(o.startswith(("experiment=", "data=", "root=", "progress=")) for o in overrides)
    with open(lr_root / "report" / "results.csv", newline="") as f:
        assert {row["run"] for row in csv.DictReader(f)} == set(lr_names())
    assert [re.fullmatch(STAMP, p.name) is not None for p in (lr_root / "multirun").iterdir()] == [True]


def test_a_run_has_the_same_name_with_and_without_a_sweep(lr_root):
    args = ["experiment=demo", "data=bioS_single", *TINY, f"root={lr_root}"]
    r = run("run.py", *args, "finetune.train.lr=1e-3", cwd=lr_root.parent)
    assert r.returncode == 0 and "building" not in r.stdout and "reused" in r.stdout, r.stderr[-2000:]
    r = run("run.py", "-m", *args, "finetune.train.lr=3e-4", cwd=lr_root.parent)
    assert r.returncode == 0 and "building" not in r.stdout, r.stderr[-2000:]
    assert sorted(p.stem for p in (lr_root / "runs" / "demo").glob("*.json")) == sorted(lr_names())
    sweeps = sorted(p.name for p in (lr_root / "multirun").iterdir())
    assert len(sweeps) == 2 and all(re.fullmatch(STAMP, s) for s in sweeps)  # the first sweep's is kept


def test_a_filed_run_with_other_stages_stops_the_command_before_any_work(lr_root):
    before = stage_folders(lr_root)
    args = ["experiment=demo", "data=bioS_single", "finetune.train.lr=1e-3", *TINY, f"root={lr_root}"]
    r = run("run.py", *args, "scale=small", cwd=lr_root.parent)  # scale is not in the name: same name
    path = lr_root / "runs" / "demo" / f"{lr_names()[0]}.json"
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr[-2000:]
    assert r.stderr.startswith(f"error: {path} is a run with other eval, pretrain stages")
    assert r.stderr.endswith("under this name; pass replace_runs=true to replace it, or use another root\n")
    assert stage_folders(lr_root) == before and "==" not in r.stdout
    # a run filed under this name with the other learning rate's stages: replaced on request
    mine = json.loads(path.read_text())
    other = json.loads((lr_root / "runs" / "demo" / f"{lr_names()[1]}.json").read_text())
    path.write_text(json.dumps({**mine, "stages": other["stages"]}))
    r = run("run.py", *args, cwd=lr_root.parent)
    assert r.returncode == 2 and "is a run with other eval stages under this name" in r.stderr, r.stderr
    r = run("run.py", *args, "replace_runs=true", cwd=lr_root.parent)
    assert r.returncode == 0 and "building" not in r.stdout, r.stderr[-2000:]
    assert json.loads(path.read_text())["stages"] == mine["stages"] and stage_folders(lr_root) == before


def test_a_run_another_job_is_building_under_its_name_stops_before_any_work(tmp_path):
    args = ["experiment=demo", "data=bioS_single", *TINY, "train.steps=100000", f"root={tmp_path / 'root'}"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, str(ROOT / "scripts" / "run.py"), *args]
    slow = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=tmp_path
    )
    try:
        for line in slow.stdout:  # its claim is taken before the first stage starts
            if "pretrain: building" in line:
                break
        before = stage_folders(tmp_path / "root")
        r = run("run.py", *args, "scale=small", cwd=tmp_path)  # the same name, other stages
        assert slow.poll() is None, "the first job ended before the second was checked"
    finally:
        slow.terminate()
        slow.wait(60)
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr[-2000:]
    assert r.stderr.startswith("error: another job is building run demo/bioS_single__data.n_people=16__")
    assert "run them one after the other, or tell them apart with an override" in r.stderr
    assert stage_folders(tmp_path / "root") == before


@pytest.mark.parametrize(
    ("args", "shown"),
    [
        (["--cfg", "job", "experiment=demo"], r"experiment: demo\n"),
        (["--cfg", "job", "-p", "data", "experiment=demo"], r"# @package data\nname: bioS_single\n"),
        (["--info", "defaults", "experiment=demo"], r"experiment/demo"),
        (["--cfg", "all", "--resolve", "-p", "hydra.sweep", "root=R"], rf"dir: R/multirun/{STAMP}\n"),
    ],
)
def test_hydra_flags_pass_through_run_py_and_run_nothing(tmp_path, args, shown):
    r = run("run.py", *args, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert re.search(shown, r.stdout + r.stderr), r.stdout[-2000:]
    assert list(tmp_path.iterdir()) == []


def test_a_launcher_without_its_plugin_is_one_line(tmp_path):
    shadow = tmp_path / "shadow" / "hydra_plugins"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("")  # a plain package first on the path hides the installed plugins
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(shadow.parent), os.environ.get("PYTHONPATH", "")]),
    }
    work = tmp_path / "work"
    work.mkdir()
    r = run("run.py", "-m", "hydra/launcher=slurm", "experiment=demo", cwd=work, env=env, fresh=True)
    assert r.returncode == 2
    assert r.stderr == "error: hydra/launcher=slurm needs the slurm extra: pip install -e '.[slurm]'\n"
    assert list(work.iterdir()) == []


@pytest.mark.skipif(
    not plugin_installed(SUBMITIT),
    reason="hydra-submitit-launcher is not installed: pip install -e '.[slurm]'",
)
def test_a_sweep_through_submitit_local_files_both_runs(tmp_path):
    root = tmp_path / "root"
    # the SLURM path (submitit) without a cluster: each job a local process, both at once
    sweep = [*LR_SWEEP[:1], "hydra/launcher=submitit_local", *LR_SWEEP[1:]]  # argparse: -m before overrides
    r = run("run.py", *sweep, *TINY, "report=false", f"root={root}", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert sorted(p.stem for p in (root / "runs" / "demo").glob("*.json")) == sorted(lr_names())
    logs = list((root / "multirun").glob("*/.submitit/*/*_log.out"))
    assert len(logs) == 2 and all("== demo / bioS_single__" in p.read_text() for p in logs)
