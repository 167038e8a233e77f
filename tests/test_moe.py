"""The mixture of experts of Part 3.3 Result 9 (model.arch=qwen3_moe): built with the experts asked for,
refused when asked wrongly, trained by biolab's pretraining, counted whole by the capacity stage (P is
every parameter, as the paper's total), rounded expert by expert for int8/int4, and planned by cap_moe
at every scale."""

import copy
import csv
import json
import math
from dataclasses import replace

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM

from biolab.cli import CONF_DIR
from biolab.data.dataset import DataConfig
from biolab.data.tokens import Corpus, prepare_corpus
from biolab.errors import ConfigError
from biolab.eval.capacity import used_parameters
from biolab.eval.quantize import expert_weights, quantize_model_
from biolab.model import ModelConfig, build_model, count_parameters, flops_per_token
from biolab.pipeline.experiment import plan_experiment
from biolab.pipeline.plan import validate_plan
from biolab.pipeline.runner import run_experiment
from biolab.report.write import write_report
from biolab.train.config import TrainConfig
from biolab.train.lm_loss import fused_head
from biolab.train.pretrain import pretrain

MOE = ModelConfig(name="moe", arch="qwen3_moe", n_layer=2, n_head=2, d_model=32, d_ff=16, n_experts=4,
                  max_positions=64)  # fmt: skip
VOCAB, EOS, PAD = 96, 0, 1
SCALES = sorted(p.stem for p in (CONF_DIR / "scale").glob("*.yaml"))


def build(cfg: ModelConfig = MOE):
    torch.manual_seed(0)
    return build_model(cfg, VOCAB, EOS, PAD, EOS)


def tokens(rows: int = 2, seq: int = 12) -> torch.Tensor:
    return torch.randint(2, VOCAB, (rows, seq), generator=torch.Generator().manual_seed(1))


def test_every_layer_is_a_mixture_of_the_experts_asked_for():
    model = build(replace(MOE, top_k=2))
    for layer in model.model.layers:
        experts, router = layer.mlp.experts, layer.mlp.gate
        assert experts.num_experts == 4 and router.top_k == 2
        assert experts.gate_up_proj.shape == (4, 2 * 16, 32)  # SwiGLU: gate and up, d_ff wide each
        assert experts.down_proj.shape == (4, 32, 16)
    config = model.config
    assert config.model_type == "qwen3_moe" and not config.norm_topk_prob and not config.output_router_logits
    assert config.mlp_only_layers == [] and config.decoder_sparse_step == 1  # every layer's MLP the MoE
    assert model.get_input_embeddings().weight is model.get_output_embeddings().weight
    # d_ff unset: each expert as wide as the arch's MLP default, 4 * d_model
    assert build(replace(MOE, d_ff=None)).model.layers[0].mlp.experts.down_proj.shape == (4, 32, 128)


def test_top_1_scales_the_expert_by_its_probability_so_the_router_learns_from_the_lm_loss():
    model = build(replace(MOE, top_k=1))
    x = tokens()
    model(input_ids=x, labels=x).loss.backward()
    assert all(layer.mlp.gate.weight.grad.abs().sum() > 0 for layer in model.model.layers)


@pytest.mark.parametrize("keys, match", [
    ({"arch": "qwen3_moe"}, r"model.arch=qwen3_moe needs model.n_experts >= 2, got 0"),
    ({"arch": "qwen3_moe", "n_experts": 1}, r"needs model.n_experts >= 2, got 1"),
    ({"arch": "qwen3_moe", "n_experts": 4, "top_k": 5}, r"model.top_k must be in \[1, n_experts=4\], got 5"),
    ({"arch": "qwen3_moe", "n_experts": 4, "top_k": 0}, r"model.top_k must be in \[1, n_experts=4\], got 0"),
    ({"arch": "qwen3_moe", "n_experts": 4, "router_aux_loss": -0.1}, r"model.router_aux_loss must be >= 0"),
    ({"n_experts": 8}, r"model.n_experts is for model.arch in \['qwen3_moe'\], not gpt_neox"),
    ({"arch": "llama", "top_k": 2}, r"model.top_k is for model.arch in \['qwen3_moe'\], not llama"),
    ({"arch": "gpt2", "router_aux_loss": 0.01}, r"model.router_aux_loss is for .*, not gpt2"),
])  # fmt: skip
def test_bad_expert_keys_are_one_line_errors(keys, match):
    with pytest.raises(ConfigError, match=match) as err:
        ModelConfig.from_dict(keys)
    assert "\n" not in str(err.value)


def test_the_router_loss_is_off_unless_asked_and_then_in_the_loss_pretraining_reads():
    x = tokens()
    plain, with_aux = build(), build(replace(MOE, router_aux_loss=0.5))  # the same weights
    assert fused_head(plain) is not None
    # the fused head computes the LM loss alone: a model whose .loss adds the router loss keeps its own
    assert fused_head(with_aux) is None
    out = with_aux(input_ids=x, labels=x)
    lm_alone = plain(input_ids=x, labels=x).loss
    assert out.aux_loss > 0
    torch.testing.assert_close(out.loss, lm_alone + 0.5 * out.aux_loss)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("moe")
    return Corpus(prepare_corpus(root, DataConfig(n_people=30, multi=2), vocab_size=400))


@pytest.mark.parametrize("aux", [0.0, 0.01])  # the fused LM loss, and the model's .loss with its router's
def test_biolabs_pretraining_trains_the_moe_to_a_finite_loss(corpus, tmp_path, aux):
    cfg = TrainConfig(steps=3, batch_size=4, ctx=32, warmup_steps=1, log_every=1, eval_every=0, ckpt_every=0,
                      wandb="disabled")  # fmt: skip
    pretrain(tmp_path, corpus, replace(MOE, router_aux_loss=aux), cfg, progress=False)
    rows = [json.loads(r) for r in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in rows if "loss" in r]
    assert len(losses) == 3 and all(math.isfinite(v) for v in losses)
    again = AutoModelForCausalLM.from_pretrained(str(tmp_path / "model"))
    assert again.config.num_experts == 4 and again.config.output_router_logits == (aux > 0)


def test_the_capacity_stage_counts_every_expert():
    model, d, f, e = build(), MOE.d_model, MOE.ff_dim, MOE.n_experts
    experts = sum(p.numel() for p in expert_weights(model))
    assert experts == MOE.n_layer * e * 3 * d * f
    # Counted from the architecture, not from model.parameters(): the tied embedding, then per layer
    # attention, its two norms and the query/key norms, the router and every expert; the final norm.
    layer = 4 * d * d + 2 * d + 2 * MOE.head_dim + e * d + e * 3 * d * f
    total = VOCAB * d + MOE.n_layer * layer + d
    # Part 3.3's P: all of them (the paper counts the MoE's total, not its active parameters), less
    # the embedding rows of tokens the data never holds
    assert used_parameters(model, np.arange(VOCAB)) == total == count_parameters(model)
    assert used_parameters(model, np.arange(50)) == total - (VOCAB - 50) * d


def test_a_tiny_sweep_measures_the_moe_with_p_counting_all_its_experts(tmp_path):
    dense = {"n_layer": 1, "n_head": 2, "d_model": 16}
    moe = {**dense, "arch": "qwen3_moe", "d_ff": 16, "n_experts": 4}
    models = f"models={{gpt2-1-2: {dense}, moe-1-2: {moe}}}".replace("'", "")
    over = ["experiment=cap_moe", "people=[16]", "exposures=[2]", models, "data.multi=2",
            "train.warmup_steps=0", "train.min_steps=null", "capacity.quantize=[4]", "train.wandb=disabled",
            "progress=false"]  # fmt: skip
    run_experiment(plan_experiment(over), tmp_path, progress=False)
    write_report(tmp_path)
    rows = list(csv.DictReader(open(tmp_path / "report" / "capacity.csv")))
    P = {(r["model"], r["quant"]): int(r["P"]) for r in rows}
    assert set(P) == {(m, q) for m in ("gpt2-1-2", "moe-1-2") for q in ("fp32", "int4")}
    # the same corpus, so the same embedding rows: P differs by the models' other weights, every expert's
    body = {name: count_parameters(build_model(ModelConfig(**keys), VOCAB, EOS, PAD), embeddings=False)
            for name, keys in (("gpt2-1-2", dense), ("moe-1-2", moe))}  # fmt: skip
    assert P["moe-1-2", "fp32"] - P["gpt2-1-2", "fp32"] == body["moe-1-2"] - body["gpt2-1-2"]
    assert body["moe-1-2"] > 4 * 3 * 16 * 16  # the four experts' weights are in it


def test_flops_count_the_weights_a_token_goes_through():
    body = count_parameters(build(), embeddings=False)
    skipped = MOE.n_layer * (MOE.n_experts - MOE.top_k) * 3 * MOE.d_model * MOE.ff_dim
    assert MOE.inactive_expert_parameters == skipped and ModelConfig().inactive_expert_parameters == 0
    assert flops_per_token(MOE, body, 64) == 6 * (body - skipped) + 12 * MOE.n_layer * MOE.d_model * 64


def test_int4_rounds_each_expert_and_leaves_the_router_in_float():
    model = build()
    rounded = copy.deepcopy(model)
    n = quantize_model_(rounded, 4, group_size=16)
    attention = MOE.n_layer * 4 * MOE.d_model**2
    assert n == attention + sum(p.numel() for p in expert_weights(model))
    for before, after in zip(expert_weights(model), expert_weights(rounded), strict=True):
        assert not torch.equal(before, after)
        groups = after.reshape(-1, 16)  # group_size inputs share one scale: at most 15 levels in each
        assert max(len(torch.unique(g.abs())) for g in groups) <= 8  # |level| in 0..7
    for layer, layer_q in zip(model.model.layers, rounded.model.layers, strict=True):
        assert torch.equal(layer.mlp.gate.weight, layer_q.mlp.gate.weight)


def pretrain_models(runs) -> dict[str, tuple[str, dict]]:
    """run name -> (pretrain stage key, its model section)."""
    out = {}
    for run in runs:
        stage = next(s for s in run.build if s.kind == "pretrain")
        out[run.manifest.run] = (stage.key, stage.config["model"])
    return out


@pytest.mark.slow
def test_cap_moe_plans_at_every_scale_with_an_moe_beside_its_dense_models():
    planned = {}
    for scale in SCALES:
        runs = plan_experiment(["experiment=cap_moe", f"scale={scale}"])
        validate_plan(runs)
        planned[scale] = models = pretrain_models(runs)
        assert all(r.manifest.stages["capacity"] and r.manifest.paper for r in runs)
        moe = {run: m for run, (_, m) in models.items() if "__moe-" in run}
        assert moe and all(m["arch"] == "qwen3_moe" and m["top_k"] == 1 for m in moe.values()), scale
        assert {e for run in models for e in ("e100", "e1000") if run.endswith(e)} == {"e100", "e1000"}
        assert any("__gpt2-" in run for run in models) and any("__llama-" in run for run in models)
    # tiny's dense models are cap_fig1's and cap_arch's: stages built once for all three experiments
    tiny = planned["tiny"]
    fig1 = pretrain_models(plan_experiment(["experiment=cap_fig1"]))
    arch = pretrain_models(plan_experiment(["experiment=cap_arch"]))
    for run in ("bioD_cap__N300__gpt2-2-2__e1000", "bioD_cap__N300__gpt2-1-2__e100"):
        assert tiny[run][0] == fig1[run][0]
    assert tiny["bioD_cap__N300__llama-2-2__e100"][0] == arch["bioD_cap__N300__llama-2-2__e100"][0]
    assert "n_experts" not in tiny["bioD_cap__N300__gpt2-2-2__e100"][1]  # unset keys stay out of stage keys
