import pytest

from biolab.data.pools import load_pools
from biolab.data.templates import load_templates


@pytest.fixture(scope="session", autouse=True)
def _no_wandb():
    """No test ever logs to wandb, even one that forgets train.wandb=disabled: biolab's training treats
    WANDB_MODE=disabled as overriding its config, and CLI tests' subprocesses inherit it."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("WANDB_MODE", "disabled")
        yield


@pytest.fixture(scope="session")
def pools():
    return load_pools()


@pytest.fixture(scope="session")
def bioS_templates():
    return load_templates("bioS")


@pytest.fixture(scope="session")
def bioR_templates():
    return load_templates("bioR")


# A stage root written by hand after the stage runner's folder contract (biolab/stages/manifest.py), so the
# report and the notebooks are tested without training anything; a real tiny run can replace it.
FAKE_DATASETS = ("bioS_single", "bioS_multi5_permute_fullname")
FAKE_PAPER = {
    "qa": "P3.1 Fig 3 left (= Fig 7 left)", "pprobe_first": "P3.1 Fig 5 (= Fig 13a)",
    "pprobe_whole": "P3.1 Fig 13c", "qprobe": "P3.1 Fig 7 (= Fig 16a)", "qa_method": None,
}  # fmt: skip
FAKE_LAYERS = 3  # embedding + 2 blocks


def _fake_stage(root, stage, key, config, status="done"):
    import hashlib
    import json

    folder = root / stage / hashlib.sha1(f"{stage}:{key}".encode()).hexdigest()[:12]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.yaml").write_text("".join(f"{k}: {v}\n" for k, v in config.items()))
    (folder / "status.json").write_text(json.dumps({"status": status, "seconds": 1.0}))
    return folder


def _fake_probe_rows(data, kind, rng):
    from biolab.data.people import ATTRIBUTES

    tasks = [("birth_date", "first")] + [(a, k) for a in ATTRIBUTES[1:] for k in ("first", "whole")]
    if kind == "p_fast":
        positions = [(f"s{k}", "special") for k in range(6)] + [(str(t), "token") for t in range(8)]
    else:
        positions = [("name_last", "query"), ("end", "query")]
    rows = []
    for control in ("none", "shuffled"):
        for layer in range(FAKE_LAYERS):
            for position, position_kind in positions:
                for attribute, task in tasks:
                    rows.append({
                        "model": f"pretrain/{data}/model", "data": data, "probe": kind, "control": control,
                        "layer": layer, "position": position, "position_kind": position_kind,
                        "attribute": attribute, "task": task, "train_acc": round(rng.uniform(0.5, 1), 4),
                        "test_acc": round(rng.uniform(0, 1), 4), "majority": round(rng.uniform(0, 0.2), 4),
                        "n_train": 50, "n": 50, "seen": 0.0,
                    })  # fmt: skip
    return rows


def build_fake_root(root, experiment="demo", datasets=FAKE_DATASETS, heatmaps=FAKE_DATASETS, probes=True):
    """ROOT with one done run per dataset: data, corpus, pretrain, finetune (eval/metrics.json),
    p_fast and q_fast probes (probes.csv; heatmaps only for ``heatmaps``), and its manifest."""
    import csv
    import json
    from pathlib import Path

    import numpy as np

    from biolab.data.people import ATTRIBUTES
    from biolab.stages.manifest import RunManifest

    root = Path(root)
    for i, data in enumerate(datasets):
        rng = np.random.default_rng(i)
        key = f"{experiment}:{data}"
        stages = {}
        folder = _fake_stage(root, "data", key, {"name": data, "n_people": 100})
        (folder / "meta.json").write_text(json.dumps({"config": {"name": data, "n_people": 100}}))
        (folder / "people.jsonl").write_text("")
        stages["data"] = folder
        stages["corpus"] = _fake_stage(root, "corpus", key, {"vocab_size": 2048})
        stages["pretrain"] = folder = _fake_stage(root, "pretrain", key, {"model": "tiny"})
        (folder / "model").mkdir()
        (folder / "metrics.jsonl").write_text(json.dumps({"step": 1, "loss": 3.0}) + "\n")
        stages["eval"] = folder = _fake_stage(root, "finetune", key, {"finetune": "lora"})
        level = 0.1 if "single" in data else 0.7
        splits = {}
        for split, lift in (("train", 0.25), ("test", 0.0)):
            block = {}
            for name in ("exact_match", "first_token", "majority"):
                row = {
                    a: round(float(np.clip(level + lift + rng.uniform(-0.1, 0.1), 0, 1)), 4)
                    for a in ATTRIBUTES
                }
                row["mean"] = float(np.mean(list(row.values())))
                block[name] = row
            splits[split] = {**block, "questions": 300}
        (folder / "eval").mkdir()
        (folder / "eval" / "metrics.json").write_text(json.dumps({"splits": splits}, indent=2))
        probe_stages = {}
        for kind in ("p_fast", "q_fast") if probes else ():
            folder = _fake_stage(root, "probe", f"{key}:{kind}", {"probe": kind})
            rows = _fake_probe_rows(data, kind, rng)
            with open(folder / "probes.csv", "w", newline="") as f:
                w = csv.DictWriter(f, fieldnames=list(rows[0]), lineterminator="\n")
                w.writeheader()
                w.writerows(rows)
            if data in heatmaps:
                from biolab.probe.plots import plot_probe_run

                plot_probe_run(rows, folder)
            probe_stages[f"probe/{kind}"] = folder.relative_to(root).as_posix()
        manifest = RunManifest(
            experiment=experiment,
            scale="tiny",
            run=data,
            data=data,
            model="tiny",
            finetune="lora",
            finetune_method="lora",
            grid="run",
            train="tiny",
            qa_ratio=0.0,
            paper=dict(FAKE_PAPER),
            stages={**{k: v.relative_to(root).as_posix() for k, v in stages.items()}, **probe_stages},
        )  # the current format; tests/golden/old_root holds manifests of the first
        (root / "runs" / experiment).mkdir(parents=True, exist_ok=True)
        (root / "runs" / experiment / f"{data}.json").write_text(json.dumps(manifest.to_dict(), indent=2))
    return root


@pytest.fixture(scope="session")
def _fake_root_once(tmp_path_factory):
    return build_fake_root(tmp_path_factory.mktemp("fake") / "runs")


@pytest.fixture
def fake_root(tmp_path, _fake_root_once):
    """A two-dataset demo root (bioS_single, bioS_multi5_permute_fullname) under ``tmp_path/runs``,
    a fresh copy for each test (its heatmaps are drawn once per session)."""
    import shutil

    return shutil.copytree(_fake_root_once, tmp_path / "runs")


TINY_RUN = ["experiment=demo", "data.n_people=24", "train.steps=4", "train.batch_size=4", "train.ctx=64",
            "model.n_layer=1", "model.d_model=32", "model.n_head=2", "tokenizer.vocab_size=400",
            "finetune.train.steps=2", "finetune.train.batch_size=4", "probe.linear.epochs=1",
            "probe.max_positions=8", "probes=[p_fast,q_fast]", "progress=false", "train.wandb=disabled",
            "finetune.train.wandb=disabled"]  # fmt: skip


def unusable_out(tmp_path, case: str, name: str):
    """(out, expected error) for an ``out`` a training script must refuse: a folder holding something
    that is not a run (``not_a_run``), or a path under a regular file (``unwritable``)."""
    if case == "not_a_run":
        out = tmp_path / "other"
        out.mkdir()
        (out / "notes.txt").write_text("mine")
        return out, "is not empty and holds no training run"
    # tests run as root, so a read-only folder would not stop them: a file as the parent does
    (tmp_path / "file").write_text("")
    return tmp_path / "file" / name, "is not writable"


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory):
    """A real `experiment=demo` root at toy size, made by the pipeline (not by hand), with its report."""
    from omegaconf import OmegaConf

    from biolab.cli import compose
    from biolab.pipeline.plan import plan_runs
    from biolab.pipeline.runner import run_experiment
    from biolab.report.write import write_report

    root = tmp_path_factory.mktemp("tiny_root") / "runs"
    cfg = compose("run", TINY_RUN)
    probes = {
        p: OmegaConf.to_container(compose("run", [*TINY_RUN, f"probe={p}"]).probe, resolve=True)
        for p in cfg.probes
    }
    runs = []
    for name in cfg.datasets:
        composed = OmegaConf.to_container(compose("run", [*TINY_RUN, f"data={name}"]), resolve=True)
        runs += plan_runs(composed, probes)
    run_experiment(runs, root, progress=False, log=lambda m: None)
    write_report(root, experiments="demo")
    return root


WARM = (
    "torch",
    "transformers",
    "accelerate",
    "peft",
    "hydra",
    "matplotlib.pyplot",
    "biolab.stages",
    "biolab.pipeline.experiment",
    "biolab.pipeline.runner",
    "biolab.pipeline.claims",
    "biolab.report.write",
)


def run_in_fork(argv: list[str], cwd=None, env: dict | None = None, timeout: float = 300):
    """Run the Python script ``argv[0]`` with ``argv[1:]`` as ``__main__`` in a forked child of this
    test process, as ``subprocess.run([python, *argv], capture_output=True, text=True)`` would: its own
    process (exit code, cwd, environment, stdout and stderr at the file-descriptor level), but with
    torch, transformers and Hydra already imported, which costs a fresh interpreter seconds per script.
    A script that starts processes of its own still may (spawn starts fresh interpreters). The child
    computes on one thread (see below), as the CLI tests' OMP_NUM_THREADS=1 asked already."""
    import importlib
    import os
    import runpy
    import subprocess
    import sys
    import tempfile
    import time
    import traceback

    for module in WARM:  # once per test process: what every script imports
        importlib.import_module(module)
    out, err = tempfile.TemporaryFile(), tempfile.TemporaryFile()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 1
        try:
            os.dup2(out.fileno(), 1)
            os.dup2(err.fileno(), 2)
            sys.stdout = open(1, "w", buffering=1, closefd=False)  # noqa: SIM115
            sys.stderr = open(2, "w", buffering=1, closefd=False)  # noqa: SIM115
            if env is not None:
                os.environ.clear()
                os.environ.update(env)
            import torch

            # One thread: libgomp's pool does not survive fork (the parent's worker threads are not
            # copied), so a parallel region in the child would wait for them forever. A script that
            # sets its own thread count (scripts/bench.py) runs in a fresh interpreter instead.
            torch.set_num_threads(1)
            os.chdir(cwd or os.getcwd())
            from hydra.core.global_hydra import GlobalHydra

            GlobalHydra.instance().clear()  # a test's compose() in the parent left it initialised
            sys.argv = [str(a) for a in argv]
            try:
                runpy.run_path(str(argv[0]), run_name="__main__")
                code = 0
            except SystemExit as stop:
                code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
                if not isinstance(stop.code, int | None):
                    print(stop.code, file=sys.stderr)
            except BaseException:
                traceback.print_exc()
                code = 1
        finally:
            try:
                sys.stdout.flush()
                sys.stderr.flush()
            finally:
                os._exit(code)
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            raise subprocess.TimeoutExpired(argv, timeout)
        time.sleep(0.02)
    texts = []
    for f in (out, err):
        f.seek(0)
        texts.append(f.read().decode("utf-8", errors="replace"))
        f.close()
    return subprocess.CompletedProcess(argv, os.waitstatus_to_exitcode(status), texts[0], texts[1])
