"""The GPU path in seconds, for a lent GPU (``pytest -m gpu``); skipped without CUDA.

One bf16 training step with fused AdamW and ``torch.compile`` (torch's ``TORCH_COMPILE_DISABLE=1``:
without, for the session's retry when compile is what fails), one batched generate, the fast
probes on GPU states with both solvers, and a finetune stage through the pipeline whose evaluation
must run on CUDA: the parts of biolab that no CPU run exercises."""

import json

import pytest
import torch

from biolab.data.dataset import DataConfig
from biolab.data.tokens import Corpus, prepare_corpus
from biolab.eval.generate import generate_answers
from biolab.model import ModelConfig, load_model
from biolab.probe.linear import LinearProbeConfig
from biolab.probe.probes import ProbeConfig, run_probe
from biolab.train.config import TrainConfig
from biolab.train.pretrain import mixed_precision, pretrain

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("gpu")
    corpus = Corpus(prepare_corpus(root, DataConfig(n_people=40, multi=2), vocab_size=400))
    cfg = TrainConfig(steps=3, batch_size=8, ctx=64, warmup_steps=1, log_every=1, eval_every=0, ckpt_every=0,
                      compile=True, wandb="disabled")  # fmt: skip
    model = ModelConfig(name="gpu", n_layer=2, n_head=2, d_model=64, max_positions=128)
    pretrain(root, corpus, model, cfg, progress=False)
    return root, cfg


def test_a_bf16_step_with_fused_adamw_and_compile(trained):
    root, cfg = trained
    assert mixed_precision(cfg) == "bf16"
    rows = [json.loads(r) for r in (root / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in rows if "loss" in r]
    assert len(losses) == 3 and all(torch.isfinite(torch.tensor(losses)))
    assert json.loads((root / "status.json").read_text())["device"].startswith("cuda")


def test_a_batched_generate_on_the_gpu(trained):
    root, _ = trained
    model, tokenizer = load_model(root / "model")
    assert next(model.parameters()).device.type == "cuda"  # biolab.device's choice, not the caller's
    prompts = ["What is the birth city of Anya Briar Forger? Answer:"] * 3 + ["Where did she work? Answer:"]
    out = generate_answers(model, tokenizer, prompts, batch_size=4, max_new_tokens=6)
    single = generate_answers(model, tokenizer, prompts[-1:], batch_size=1, max_new_tokens=6)
    assert len(out) == 4 and out[0] == out[1] == out[2] and out[3] == single[0]


@pytest.mark.parametrize("solver", ["logreg", "ridge"])
def test_a_probe_fit_on_gpu_states(trained, tmp_path, solver):
    root, _ = trained
    cfg = ProbeConfig(max_positions=4, linear=LinearProbeConfig(solver=solver, epochs=2), controls=[])
    rows = run_probe(root / "model", root / "data", cfg, tmp_path / "probe", device="cuda", plots=False)
    assert rows and all(0 <= r["test_acc"] <= 1 for r in rows)


def test_a_finetune_stage_evaluates_on_cuda_through_the_pipeline(tmp_path):
    from omegaconf import OmegaConf

    from biolab.cli import compose
    from biolab.pipeline.plan import plan_runs
    from biolab.pipeline.runner import run_experiment

    overrides = ["data.n_people=24", "train.steps=4", "train.batch_size=4", "train.ctx=64", "model.n_layer=1",
                 "model.d_model=32", "model.n_head=2", "tokenizer.vocab_size=400", "finetune.train.steps=2",
                 "finetune.train.batch_size=4", "probes=[]", "qa_eval=finetune", "train.wandb=disabled",
                 "finetune.train.wandb=disabled", "train.compile=true"]  # fmt: skip
    cfg = OmegaConf.to_container(compose("run", overrides), resolve=True)
    [manifest] = run_experiment(plan_runs(cfg), tmp_path, progress=False, log=lambda m: None)
    stage = tmp_path / json.loads(manifest.read_text())["stages"]["eval"]
    metrics = json.loads((stage / "eval" / "metrics.json").read_text())
    assert metrics["device"].startswith("cuda") and metrics["batch_size"] == cfg["eval"]["gpu_batch_size"]
    assert json.loads((stage / "status.json").read_text())["device"].startswith("cuda")
