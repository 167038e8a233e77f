from dataclasses import replace
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from transformers import AutoModelForCausalLM

from biolab.cli import compose
from biolab.errors import ConfigError
from biolab.model import (
    ARCHS,
    MOE_ARCHS,
    ModelConfig,
    build_model,
    count_parameters,
    flops_per_token,
    make_hf_config,
    model_summary,
)

CONF = Path(__file__).resolve().parents[1] / "conf" / "model"
PRESETS = sorted(p.stem for p in CONF.glob("*.yaml"))
VOCAB = 512  # small vocab keeps the big presets quick to build and step
EOS, PAD = 0, 1


def preset(name: str) -> ModelConfig:
    """The ``model`` group's preset as Hydra composes it (a preset may build on another: deep8 on tiny)."""
    model = compose("run", [f"model={name}"]).model
    return ModelConfig.from_dict(OmegaConf.to_container(model, resolve=True))


def meta_model(cfg: ModelConfig, vocab: int):
    """The real module tree without allocating weights: enough for counts and structure."""
    with torch.device("meta"):
        config = make_hf_config(cfg, vocab, EOS, PAD)
        return AutoModelForCausalLM.from_config(config, attn_implementation="sdpa")


def test_presets_load_and_are_named_after_their_file():
    paper = {"gpt2_rotary_124m", "gpt2_rotary_302m", "gpt2_124m", "llama_124m"}
    assert paper | {"tiny", "small"} <= set(PRESETS)
    for name in PRESETS:
        cfg = preset(name)
        assert cfg.name == name
        assert cfg.max_positions == 512


@pytest.mark.slow
@pytest.mark.parametrize("name", PRESETS)
def test_preset_builds_and_trains_one_step(name):
    torch.manual_seed(0)
    model = build_model(preset(name), VOCAB, EOS, PAD)
    assert model.dtype == torch.float32 and model.training
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    batch = torch.randint(0, VOCAB, (2, 16))
    before = model.get_input_embeddings().weight.detach().clone()
    loss = model(input_ids=batch, labels=batch).loss
    assert torch.isfinite(loss)
    loss.backward()
    opt.step()
    assert not torch.equal(before, model.get_input_embeddings().weight)
    with torch.no_grad():
        after = model(input_ids=batch, labels=batch).loss
    assert torch.isfinite(after) and after < loss


@pytest.mark.parametrize(
    "name, exact, paper", [("gpt2_rotary_124m", 123_653_376, 124e6), ("gpt2_rotary_302m", 300_460_800, 302e6)]
)
def test_paper_models_have_the_papers_size_at_gpt2_vocab(name, exact, paper):
    n = count_parameters(meta_model(preset(name), 50257))
    assert n == exact
    assert abs(n / paper - 1) < 0.02


def test_gpt_neox_is_gpt2_with_rotary():
    cfg = preset("gpt2_rotary_124m")
    model = meta_model(cfg, VOCAB)
    config = model.config
    assert config.model_type == "gpt_neox"
    assert config.use_parallel_residual is False
    assert config.tie_word_embeddings
    assert model.get_input_embeddings().weight is model.get_output_embeddings().weight
    assert config._attn_implementation == "sdpa"
    assert config.rope_parameters["rope_theta"] == 10000.0
    attn = model.gpt_neox.layers[0].attention
    assert attn.head_size == 64 and attn.rotary_ndims == 16 == cfg.rotary_dims
    assert model.gpt_neox.rotary_emb.inv_freq.shape == (8,)  # one frequency per rotated pair


def test_count_parameters_without_embeddings():
    d, vocab, pos = 128, VOCAB, 512
    for arch, tie, dropped in [
        ("gpt_neox", True, vocab * d),
        ("gpt2", True, vocab * d + pos * d),  # learned position table
        ("llama", False, 2 * vocab * d),  # untied LM head
    ]:
        model = meta_model(ModelConfig(arch=arch, d_model=d, tie_embeddings=tie), vocab)
        assert count_parameters(model) - count_parameters(model, embeddings=False) == dropped, arch


def test_dropout_reaches_every_knob():
    for arch in ARCHS:
        experts = 2 if arch in MOE_ARCHS else 0
        hf = make_hf_config(ModelConfig(arch=arch, dropout=0.1, n_experts=experts), VOCAB, EOS, PAD).to_dict()
        knobs = {k: v for k, v in hf.items() if "drop" in k}
        assert knobs and set(knobs.values()) == {0.1}, (arch, knobs)


def test_save_and_reload_give_identical_logits(tmp_path):
    torch.manual_seed(0)
    model = build_model(preset("tiny"), VOCAB, EOS, PAD, bos_token_id=2).eval()
    assert "gpt_neox 4L-4H-128d" in model_summary(model)
    model.save_pretrained(tmp_path)
    again = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    batch = torch.randint(0, VOCAB, (2, 16))
    with torch.no_grad():
        assert torch.equal(model(batch).logits, again(batch).logits)
    assert again.config.use_parallel_residual is False
    assert again.config.rope_parameters["partial_rotary_factor"] == 0.25
    gen = again.generation_config
    assert (gen.eos_token_id, gen.pad_token_id, gen.bos_token_id) == (EOS, PAD, 2)
    assert (again.config.eos_token_id, again.config.pad_token_id, again.config.bos_token_id) == (EOS, PAD, 2)


@pytest.mark.parametrize(
    "d, match",
    [
        ({"arch": "gpt3"}, r"model.arch must be one of \['gpt_neox', 'gpt2', .*, 'qwen3_moe'\], got"),
        ({"d_model": 130, "n_head": 4}, r"model.d_model \(130\) must be divisible by model.n_head \(4\)"),
        ({"dmodel": 128}, r"unknown model key\(s\) \['dmodel'\]"),
        ({"n_layer": "4"}, r"model.n_layer must be int"),
        ({"n_layer": 0}, r"model.n_layer must be >= 1"),
        ({"rotary_pct": 0.0}, r"model.rotary_pct must be in \(0, 1\]"),
        ({"rotary_pct": 0.3}, r"rotary_pct \* head_dim must be an even integer, got 0.3 \* 32 = 9.6"),
        ({"dropout": 1.0}, r"model.dropout must be in \[0, 1\)"),
    ],
)
def test_bad_config_is_a_one_line_error(d, match):
    with pytest.raises(ConfigError, match=match) as err:
        ModelConfig.from_dict(d)
    assert "\n" not in str(err.value)


def test_build_checks_config_and_special_ids():
    with pytest.raises(ConfigError, match="model.arch"):
        make_hf_config(replace(ModelConfig(), arch="bert"), VOCAB, EOS, PAD)
    with pytest.raises(ConfigError, match="eos_token_id 512 is outside the vocabulary"):
        make_hf_config(ModelConfig(), VOCAB, VOCAB, PAD)


def test_flops_per_token_is_palm_formula():
    cfg = preset("gpt2_rotary_124m")
    # 6 * 85,056,000 + 12 * 12 layers * 768 * 512 ctx = 510,336,000 + 56,623,104
    assert flops_per_token(cfg, 85_056_000, 512) == 566_959_104
    assert count_parameters(meta_model(cfg, VOCAB), embeddings=False) == 85_056_000


def test_a_model_refuses_a_dataset_it_was_not_trained_on(tmp_path):
    import json

    from biolab.errors import ConfigError
    from biolab.model import TRAINING_DATA, check_training_data

    model, adapter = tmp_path / "pre" / "model", tmp_path / "ft" / "model"
    model.mkdir(parents=True)
    adapter.mkdir(parents=True)
    ours = {"config": {"name": "bioS_single"}, "sha256": {"people.jsonl": "a", "bios.jsonl": "b"}}
    other = {"config": {"name": "bioS_multi5"}, "sha256": {"people.jsonl": "a", "bios.jsonl": "c"}}
    assert "does not record" in check_training_data(model, ours)  # a model from before the record
    (model / TRAINING_DATA).write_text(json.dumps({"name": "bioS_single", "sha256": ours["sha256"]}))
    assert check_training_data(model, ours) is None
    with pytest.raises(ConfigError, match="on dataset 'bioS_single', not on data_dir's 'bioS_multi5'"):
        check_training_data(model, other)
    assert check_training_data(model, other, allow_other=True).startswith("warning: ")
    # a LoRA adapter answers for its base model, wherever the root has moved (relative base path)
    (adapter / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "../../pre/model"}))
    assert check_training_data(adapter, ours) is None


def test_no_mlp_is_d_ff_0_where_the_architecture_allows_it():
    for arch in ("gpt_neox", "llama"):
        model = build_model(ModelConfig(arch=arch, n_layer=1, n_head=2, d_model=32, d_ff=0), 300, 0, 1, 0)
        assert model(input_ids=torch.zeros(1, 4, dtype=torch.long)).logits.shape == (1, 4, 300)
    with pytest.raises(ConfigError, match="d_ff=0"):
        ModelConfig(arch="gpt2", d_ff=0).validate()
