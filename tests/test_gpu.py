"""The GPU path in seconds, for a lent GPU (``pytest -m gpu``); skipped without CUDA.

One bf16 training step with fused AdamW and ``torch.compile``, one batched generate, one run of
the fast probes on GPU states: the parts of biolab that no CPU run exercises."""

import json

import pytest
import torch

from biolab.data.dataset import DataConfig
from biolab.data.tokens import Corpus, prepare_corpus
from biolab.eval.generate import generate_answers
from biolab.model import ModelConfig, load_model
from biolab.probe.linear import LinearProbeConfig
from biolab.probe.probes import ProbeConfig, run_probe
from biolab.train.pretrain import TrainConfig, mixed_precision, pretrain

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
    model.to("cuda")
    prompts = ["What is the birth city of Anya Briar Forger? Answer:"] * 3 + ["Where did she work? Answer:"]
    out = generate_answers(model, tokenizer, prompts, batch_size=4, max_new_tokens=6)
    single = generate_answers(model, tokenizer, prompts[-1:], batch_size=1, max_new_tokens=6)
    assert len(out) == 4 and out[0] == out[1] == out[2] and out[3] == single[0]


def test_a_probe_fit_on_gpu_states(trained, tmp_path):
    root, _ = trained
    cfg = ProbeConfig(max_positions=4, linear=LinearProbeConfig(epochs=2), controls=[])
    rows = run_probe(root / "model", root / "data", cfg, tmp_path / "probe", device="cuda", plots=False)
    assert rows and all(0 <= r["test_acc"] <= 1 for r in rows)
