import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from biolab.data.dataset import DataConfig
from biolab.data.tokens import Corpus, prepare_corpus
from biolab.errors import ConfigError
from biolab.model import ModelConfig
from biolab.status import read_status
from biolab.train.curves import plot_training
from biolab.train.pretrain import TrainConfig, TrainingError, pretrain

ROOT = Path(__file__).resolve().parent.parent
MODEL = ModelConfig(name="test", n_layer=2, n_head=2, d_model=32, max_positions=64)


def train_cfg(**kw):
    base = dict(steps=6, batch_size=4, ctx=32, warmup_steps=2, log_every=1, eval_every=3, eval_people=8,
                ckpt_every=2, wandb="disabled")  # fmt: skip
    return TrainConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("pre")
    return Corpus(prepare_corpus(root, DataConfig(n_people=60, multi=2), vocab_size=400))


def weights(run):
    return load_file(str(Path(run) / "model" / "model.safetensors"))


def test_a_tiny_run_learns_and_saves_an_hf_model(corpus, tmp_path):
    final = pretrain(tmp_path, corpus, MODEL, train_cfg(steps=30, lr=3e-3, eval_every=15), progress=False)
    rows = [json.loads(r) for r in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in rows if "loss" in r]
    assert len(losses) == 30 and losses[-1] < losses[0] - 0.5
    assert "bio_first_token/test/mean" in final and final["tokens_per_s"] > 0
    status = read_status(tmp_path)
    assert status["status"] == "done" and status["device"].startswith("cpu") and "git_commit" in status
    model = AutoModelForCausalLM.from_pretrained(str(tmp_path / "model"))
    tok = AutoTokenizer.from_pretrained(str(tmp_path / "model"))
    out = model.generate(**tok("What is the birth date of", return_tensors="pt"), max_new_tokens=3)
    assert out.shape[1] > 3
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step_0000026", "step_0000028"]
    png = plot_training(tmp_path, tmp_path / "curves.png")
    assert png.stat().st_size > 10_000


def test_resume_ends_with_the_same_weights(corpus, tmp_path):
    pretrain(tmp_path / "a", corpus, MODEL, train_cfg(), progress=False)

    def kill(step, model):
        if step == 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        pretrain(tmp_path / "b", corpus, MODEL, train_cfg(), on_step=kill, progress=False)
    assert read_status(tmp_path / "b")["status"] == "failed"
    pretrain(tmp_path / "b", corpus, MODEL, train_cfg(), progress=False)  # resumes from step 4
    a, b = weights(tmp_path / "a"), weights(tmp_path / "b")
    assert all(torch.equal(a[k], b[k]) for k in a)
    steps = [json.loads(r)["step"] for r in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(steps)  # rows after the checkpoint were dropped, not duplicated


def test_a_non_finite_loss_stops_and_keeps_the_last_checkpoint(corpus, tmp_path):
    def poison(step, model):
        if step == 3:
            with torch.no_grad():
                next(model.parameters()).fill_(float("nan"))

    with pytest.raises(TrainingError, match=r"non-finite loss nan at step 4; the last good checkpoint"):
        pretrain(tmp_path, corpus, MODEL, train_cfg(), on_step=poison, progress=False)
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["step_0000002"]
    assert read_status(tmp_path)["status"] == "failed" and not (tmp_path / "model").exists()


def test_mixed_training_runs(corpus, tmp_path):
    final = pretrain(tmp_path, corpus, MODEL, train_cfg(steps=2, qa_ratio=0.8), progress=False)
    assert final["step"] == 2


def test_bad_input_fails_before_training(corpus, tmp_path):
    with pytest.raises(ConfigError, match="train.ctx=128 exceeds model.max_positions=64"):
        pretrain(tmp_path, corpus, MODEL, train_cfg(ctx=128))
    with pytest.raises(ConfigError, match="not a multiple of train.micro_batch_size=3"):
        pretrain(tmp_path, corpus, MODEL, train_cfg(micro_batch_size=3))
    assert not (tmp_path / "status.json").exists()
    pretrain(tmp_path, corpus, MODEL, train_cfg(steps=1), progress=False)
    before = weights(tmp_path)
    with pytest.raises(ConfigError, match="holds a finished run; pass overwrite=true"):
        pretrain(tmp_path, corpus, MODEL, train_cfg(steps=1))
    assert all(torch.equal(before[k], v) for k, v in weights(tmp_path).items())
    pretrain(tmp_path, corpus, MODEL, train_cfg(steps=2), overwrite=True, progress=False)
    assert read_status(tmp_path)["steps"] == 2


def cli(run, extra=(), launcher=()):
    args = [
        "model=tiny", "model.n_layer=2", "model.n_head=2", "model.d_model=32", "train.ctx=32",
        "train.batch_size=4", "train.steps=3", "train.warmup_steps=1", "train.eval_every=0",
        "train.wandb=disabled", "data.n_people=40", "tokenizer.vocab_size=300", f"out={run}",
        "progress=false", *extra,
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([*launcher, str(ROOT / "scripts" / "pretrain.py"), *args], capture_output=True,
                          text=True, timeout=600, env=env)  # fmt: skip


@pytest.mark.slow
def test_cli_and_two_process_accelerate_match_one_process(tmp_path):
    one = cli(tmp_path / "one", launcher=[sys.executable])
    assert one.returncode == 0, one.stderr
    two = cli(tmp_path / "two", extra=[f"data_dir={tmp_path / 'one' / 'data'}"], launcher=[
        sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "2", "--num_machines", "1",
        "--mixed_precision", "no", "--dynamo_backend", "no", "--cpu",
    ])  # fmt: skip
    assert two.returncode == 0, two.stderr
    a, b = weights(tmp_path / "one"), weights(tmp_path / "two")
    # the same global batches, averaged over 2 processes instead of 1: equal up to float rounding
    assert all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)
    shutil.rmtree(tmp_path / "two" / "checkpoints", ignore_errors=True)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["model=nope"], "unknown model preset 'nope'"),
        (["train.ctx=1024"], "train.ctx=1024 exceeds model.max_positions=512"),
        (["train.batch_size=5", "train.micro_batch_size=2"], "not a multiple of train.micro_batch_size=2"),
        (["data_dir=/nonexistent"], "not a biolab dataset"),
    ],
)
def test_cli_bad_input(tmp_path, extra, message):
    r = cli(tmp_path / "run", extra=extra, launcher=[sys.executable])
    assert r.returncode != 0 and message in r.stderr and r.stderr.startswith("error:"), r.stderr
    assert not (tmp_path / "run").exists()
