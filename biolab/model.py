"""Hugging Face language models: built randomly initialised from a small typed config
(``conf/model/*.yaml``), and loaded back from a run's model or peft adapter folder.

The paper's model is "GPT2 with rotary": in transformers that is GPT-NeoX with a sequential residual,
tied embeddings and rotary on a quarter of each head. ``gpt2`` (learned absolute positions) and
``llama`` (RMSNorm, SwiGLU, full rotary) are there for ablations. ``modernbert`` is the paper's
GBERT (P3.1 section 7): transformers' ModernBERT is the encoder it has with rotary and pre-LayerNorm,
here with full (global) attention in every layer and trained by masked LM. It differs from the
paper's "GPT2 with full attention" in a GeGLU MLP, no biases and rotary on every head dim.

``qwen3_moe`` is the mixture of experts of Part 3.3 Result 9 (the paper: 32 experts, each a d->d->d MLP,
tutel top-1 routing with capacity factor 2 in training and 8 at test). It routes as Switch/tutel top-1
does: the chosen expert's output scaled by its softmax probability (``norm_topk_prob=False``), so the
router learns from the LM loss. Of transformers' other causal MoE LMs, Qwen2-MoE routes so too but
always adds a shared expert, OLMoE is much the same (its query/key norm spans all heads), and Mixtral,
GraniteMoE and JetMoE renormalise the top-k weights, which at top-1 pins the weight to 1 and leaves
the router untrained without an auxiliary loss. The causal classes with non-gated experts stray
further: NemotronH (no position encoding in its attention, an always-on shared expert, sigmoid
routing) and Ergo (a shared expert, sigmoid routing renormalised over the top-k). Differences from the
paper's MoE: SwiGLU experts (three d x d_ff matrices, not two), Llama-style blocks (RMSNorm, full
rotary, no biases) with a per-head RMSNorm on queries and keys, and dropless routing (no capacity
factor: no token is ever dropped, in training or at test). No router auxiliary loss unless
``router_aux_loss`` > 0 sets its coefficient.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from transformers import (
    AutoModelForCausalLM,
    AutoModelForMaskedLM,
    AutoTokenizer,
    GPT2Config,
    GPTNeoXConfig,
    LlamaConfig,
    ModernBertConfig,
    PreTrainedConfig,
    PreTrainedModel,
    Qwen3MoeConfig,
)

from biolab.config import from_dict
from biolab.device import pick_device
from biolab.errors import ConfigError

ARCHS = ("gpt_neox", "gpt2", "llama", "modernbert", "qwen3_moe")
MASKED_LM_ARCHS = ("modernbert",)  # trained by masked LM (bidirectional attention); the rest are causal
MOE_ARCHS = ("qwen3_moe",)  # every layer's MLP a mixture of n_experts experts


def is_masked_lm(model_or_config) -> bool:
    """Whether a model (or its transformers config) is a masked LM rather than a causal one."""
    config = getattr(model_or_config, "config", model_or_config)
    return config.model_type in MASKED_LM_ARCHS


def auto_class(model_or_config):
    """The transformers Auto class that builds or loads this kind of model."""
    return AutoModelForMaskedLM if is_masked_lm(model_or_config) else AutoModelForCausalLM


@dataclass(frozen=True)
class ModelConfig:
    """Model shape; the vocabulary comes from the tokenizer at build time."""

    name: str = "tiny"
    arch: str = "gpt_neox"  # gpt_neox ("GPT2 with rotary"), gpt2 (absolute positions), llama, modernbert,
    # qwen3_moe (mixture of experts)
    n_layer: int = 4
    n_head: int = 4
    d_model: int = 128
    d_ff: int | None = None  # default 4 * d_model, for llama and modernbert too (gated: 1.5x the MLP params);
    # 0: no MLP (Part 3.3 result 5; what is left of it is the output bias, d_model numbers per layer);
    # qwen3_moe: each expert's width (the paper's experts: d_model)
    max_positions: int = 512
    rotary_pct: float = 0.25  # fraction of each head's dims that get rotary (gpt_neox only; llama and
    # qwen3_moe: all)
    rotary_base: float = 10000.0  # gpt_neox, llama and qwen3_moe
    tie_embeddings: bool = True
    dropout: float = 0.0
    init_std: float = 0.02
    n_experts: int = 0  # qwen3_moe: experts per layer (>= 2); 0 on the dense archs
    top_k: int = 1  # qwen3_moe: experts each token goes through (the paper: 1)
    router_aux_loss: float = 0.0  # qwen3_moe: coefficient of the load-balancing loss; 0: none

    @classmethod
    def from_dict(cls, d: dict) -> ModelConfig:
        return from_dict(cls, d, "model")

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_head

    @property
    def ff_dim(self) -> int:
        return self.d_ff if self.d_ff is not None else 4 * self.d_model

    @property
    def masked_lm(self) -> bool:
        return self.arch in MASKED_LM_ARCHS

    @property
    def rotary_dims(self) -> int:
        return int(self.head_dim * self.rotary_pct)

    @property
    def moe(self) -> bool:
        return self.arch in MOE_ARCHS

    @property
    def inactive_expert_parameters(self) -> int:
        """Expert weights a token does not go through: all of them but its top_k per layer (SwiGLU
        experts without biases, three d_model x d_ff matrices each); 0 for a dense model."""
        if not self.moe:
            return 0
        return self.n_layer * (self.n_experts - self.top_k) * 3 * self.d_model * self.ff_dim

    def validate(self) -> None:
        if self.arch not in ARCHS:
            raise ConfigError(f"model.arch must be one of {list(ARCHS)}, got {self.arch!r}")
        for key in ("n_layer", "n_head", "d_model", "max_positions"):
            if getattr(self, key) < 1:
                raise ConfigError(f"model.{key} must be >= 1, got {getattr(self, key)}")
        if self.d_ff is not None and self.d_ff < 0:
            raise ConfigError(f"model.d_ff must be >= 0 or null, got {self.d_ff}")
        if self.d_ff == 0 and self.arch not in ("gpt_neox", "llama"):
            raise ConfigError(f"model.d_ff=0 (no MLP) works for gpt_neox and llama, not {self.arch}")
        if self.d_model % self.n_head:
            raise ConfigError(
                f"model.d_model ({self.d_model}) must be divisible by model.n_head ({self.n_head})"
            )
        if not 0 < self.rotary_pct <= 1:
            raise ConfigError(f"model.rotary_pct must be in (0, 1], got {self.rotary_pct}")
        # Rotary works on pairs of dims and transformers truncates head_dim * pct, so demand an exact,
        # even count rather than silently rotating fewer dims than asked for.
        exact = self.head_dim * self.rotary_pct
        if self.arch == "gpt_neox" and (exact != self.rotary_dims or self.rotary_dims % 2):
            raise ConfigError(
                f"model.rotary_pct * head_dim must be an even integer, got {self.rotary_pct} * "
                f"{self.head_dim} = {exact:g}"
            )
        if self.rotary_base <= 0:
            raise ConfigError(f"model.rotary_base must be > 0, got {self.rotary_base}")
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"model.dropout must be in [0, 1), got {self.dropout}")
        if self.init_std <= 0:
            raise ConfigError(f"model.init_std must be > 0, got {self.init_std}")
        self.validate_experts()

    def validate_experts(self) -> None:
        """n_experts, top_k and router_aux_loss: set on the MoE arch, left at their defaults elsewhere."""
        if not self.moe:
            moe_keys = {"n_experts": 0, "top_k": 1, "router_aux_loss": 0.0}
            for key, default in moe_keys.items():
                if getattr(self, key) != default:
                    raise ConfigError(f"model.{key} is for model.arch in {list(MOE_ARCHS)}, not {self.arch}")
            return
        if self.n_experts < 2:
            raise ConfigError(f"model.arch={self.arch} needs model.n_experts >= 2, got {self.n_experts}")
        if not 1 <= self.top_k <= self.n_experts:
            raise ConfigError(f"model.top_k must be in [1, n_experts={self.n_experts}], got {self.top_k}")
        if self.router_aux_loss < 0:
            raise ConfigError(f"model.router_aux_loss must be >= 0, got {self.router_aux_loss}")


def make_hf_config(
    cfg: ModelConfig, vocab_size: int, eos_token_id: int, pad_token_id: int, bos_token_id: int | None = None
) -> PreTrainedConfig:
    """The transformers config for ``cfg``, without allocating any weights."""
    cfg.validate()  # a hand-built ModelConfig skips from_dict's check
    ids = {"eos_token_id": eos_token_id, "pad_token_id": pad_token_id, "bos_token_id": bos_token_id}
    for key, tok in ids.items():
        if tok is not None and not 0 <= tok < vocab_size:
            raise ConfigError(f"{key} {tok} is outside the vocabulary (size {vocab_size})")
    # Every class has its own defaults for these (e.g. GPT-NeoX bos=0, eos=2): always pass them all.
    common = dict(
        vocab_size=vocab_size,
        initializer_range=cfg.init_std,
        tie_word_embeddings=cfg.tie_embeddings,
        **ids,
    )
    # the names GPT-NeoX, ModernBERT and Llama share (GPT-2 has its own)
    shape = dict(hidden_size=cfg.d_model, num_hidden_layers=cfg.n_layer, num_attention_heads=cfg.n_head,
                 intermediate_size=cfg.ff_dim, max_position_embeddings=cfg.max_positions)  # fmt: skip
    if cfg.arch == "gpt_neox":
        return GPTNeoXConfig(
            **shape,
            # transformers 5 keeps rotary settings in rope_parameters (rotary_pct/rotary_emb_base are gone)
            rope_parameters={
                "rope_type": "default",
                "rope_theta": cfg.rotary_base,
                "partial_rotary_factor": cfg.rotary_pct,
            },
            # GPT-2's order, x + attn(ln(x)) then + mlp(ln(.)); NeoX defaults to the parallel sum
            use_parallel_residual=False,
            attention_dropout=cfg.dropout,
            hidden_dropout=cfg.dropout,
            classifier_dropout=cfg.dropout,
            **common,
        )
    if cfg.arch == "gpt2":
        return GPT2Config(
            n_embd=cfg.d_model,
            n_layer=cfg.n_layer,
            n_head=cfg.n_head,
            n_inner=cfg.ff_dim,
            n_positions=cfg.max_positions,
            resid_pdrop=cfg.dropout,  # GPT2Config defaults all of these to 0.1
            embd_pdrop=cfg.dropout,
            attn_pdrop=cfg.dropout,
            summary_first_dropout=cfg.dropout,
            **common,
        )
    if cfg.moe:
        return moe_config(cfg, shape, common)
    if cfg.arch == "modernbert":
        return ModernBertConfig(
            **shape,
            layer_types=["full_attention"] * cfg.n_layer,  # no sliding-window layers: GBERT sees it all
            rope_parameters={"full_attention": {"rope_type": "default", "rope_theta": cfg.rotary_base}},
            hidden_activation="gelu",
            attention_dropout=cfg.dropout,
            embedding_dropout=cfg.dropout,
            mlp_dropout=cfg.dropout,
            classifier_dropout=cfg.dropout,
            cls_token_id=eos_token_id,  # every text starts after an EOS, as for the causal models
            sep_token_id=eos_token_id,
            **common,
        )
    return LlamaConfig(
        **shape,
        num_key_value_heads=cfg.n_head,
        rope_parameters={"rope_type": "default", "rope_theta": cfg.rotary_base},
        attention_dropout=cfg.dropout,  # Llama has no residual or embedding dropout
        **common,
    )


def moe_config(cfg: ModelConfig, shape: dict, common: dict) -> Qwen3MoeConfig:
    """Qwen3-MoE with an MoE block in every layer, routed Switch-style (see the module docstring)."""
    return Qwen3MoeConfig(
        **shape,
        num_key_value_heads=cfg.n_head,
        num_experts=cfg.n_experts,
        num_experts_per_tok=cfg.top_k,
        moe_intermediate_size=cfg.ff_dim,
        # top-1 weights renormalised over the chosen experts would all be 1: keep the softmax probability
        norm_topk_prob=False,
        decoder_sparse_step=1,  # every layer sparse (mlp_only_layers, the dense exceptions, empty)
        mlp_only_layers=[],
        # The class adds the auxiliary loss to .loss only when it returns router logits: off at 0.
        output_router_logits=cfg.router_aux_loss > 0,
        router_aux_loss_coef=cfg.router_aux_loss,
        rope_parameters={"rope_type": "default", "rope_theta": cfg.rotary_base},
        attention_dropout=cfg.dropout,  # no residual or embedding dropout, as Llama
        **common,
    )


def build_model(
    cfg: ModelConfig, vocab_size: int, eos_token_id: int, pad_token_id: int, bos_token_id: int | None = None
) -> PreTrainedModel:
    """A randomly initialised causal (or masked) LM in float32 with SDPA attention; seed torch before
    calling."""
    config = make_hf_config(cfg, vocab_size, eos_token_id, pad_token_id, bos_token_id)
    model = auto_class(config).from_config(config, attn_implementation="sdpa").to(torch.float32)
    if getattr(model, "generation_config", None) is None:  # an encoder does not generate
        return model
    # generate() reads the generation config, which can carry its own copies of the special ids.
    gen = model.generation_config
    gen.eos_token_id, gen.pad_token_id, gen.bos_token_id = eos_token_id, pad_token_id, bos_token_id
    return model


def count_parameters(model: nn.Module, embeddings: bool = True) -> int:
    """Distinct parameters (tied ones once).

    ``embeddings=False`` drops every embedding table (token and, for gpt2, position) and an untied LM
    head: the "non-embedding" N of scaling laws and of :func:`flops_per_token`.
    """
    skip: set[int] = set()
    if not embeddings:
        skip = {id(p) for m in model.modules() if isinstance(m, nn.Embedding) for p in m.parameters()}
        head = model.get_output_embeddings() if isinstance(model, PreTrainedModel) else None
        if head is not None:
            skip.add(id(head.weight))
    return sum(p.numel() for p in model.parameters() if id(p) not in skip)


def flops_per_token(cfg: ModelConfig, n_params_no_embed: int, ctx: int) -> float:
    """Training FLOPs per token (forward + backward), PaLM appendix B: ``6 N + 12 L d ctx``.

    ``6 N`` counts the matmuls with the N non-embedding weights (2 forward, 4 backward); the second term
    is attention's QK^T and AV products over a ``ctx``-token window (no causal halving, as in PaLM).
    The LM head matmul is left out, as in PaLM's count, so MFU from this is slightly conservative.
    An MoE counts the weights a token goes through: ``n_params_no_embed`` less the experts it skips.
    """
    active = n_params_no_embed - cfg.inactive_expert_parameters
    return 6.0 * active + 12.0 * cfg.n_layer * cfg.d_model * ctx


def model_summary(model: PreTrainedModel) -> str:
    """One line, e.g. ``gpt_neox 12L-12H-768d, 123.7M params (85.1M non-embedding)``."""
    c = model.config
    total, body = count_parameters(model) / 1e6, count_parameters(model, embeddings=False) / 1e6
    return (
        f"{c.model_type} {c.num_hidden_layers}L-{c.num_attention_heads}H-{c.hidden_size}d, "
        f"{total:.1f}M params ({body:.1f}M non-embedding)"
    )


def load_pretrained(path: str | Path) -> PreTrainedModel:
    """A pretrained model folder in float32, to train further (finetuning starts here)."""
    path = Path(path)
    if model_type(path) is None:
        raise not_a_model(path, "pretrained")
    return _auto_for(path).from_pretrained(str(path), dtype=torch.float32)


def model_type(path: Path) -> str | None:
    """The transformers model_type of a saved model folder; None for a folder without one (a
    training run's own config.json has none)."""
    try:
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return config.get("model_type") if isinstance(config, dict) else None


def is_model_folder(path: str | Path) -> bool:
    """A folder ``load_model`` takes: a transformers model or a peft adapter."""
    path = Path(path)
    return (path / "adapter_config.json").is_file() or model_type(path) is not None


def not_a_model(path: Path, key: str) -> ConfigError:
    """The one-line error for ``key=path`` that is no model folder; a run folder (RUN instead of
    RUN/model, an easy slip) gets its model folder suggested."""
    hint = f"; pass {key}={path / 'model'}" if is_model_folder(path / "model") else ""
    found = "a config.json without model_type" if (path / "config.json").is_file() else "no config.json"
    found = found if path.exists() else "it does not exist"
    return ConfigError(f"{key}={path} is not a model folder ({found}){hint}")


def saved_masked_lm(path: str | Path) -> bool:
    """Whether a saved model folder holds a masked LM, from its config.json alone (no weights read)."""
    return model_type(Path(path)) in MASKED_LM_ARCHS


def _auto_for(path: Path):
    """The Auto class for a saved model folder, from its config.json's model_type."""
    return AutoModelForMaskedLM if saved_masked_lm(path) else AutoModelForCausalLM


def load_model(path: str | Path, key: str = "model_dir", device: str | None = None):
    """(model in eval mode on ``device``, tokenizer) from a model folder or a peft adapter folder
    (merged for speed); ``key`` names ``path`` in the error for a folder that is neither. ``device``
    None: ``biolab.device.pick_device``'s choice (CUDA, MPS, else the CPU)."""
    device = pick_device(device)  # before loading: a bad device is a one-line error
    path = Path(path)
    if (path / "adapter_config.json").is_file():
        from peft import PeftModel

        # The adapter names its base relative to itself (so a root can move); peft alone would
        # resolve that against the working directory.
        base_path = _adapter_base(path)
        base_model = _auto_for(base_path).from_pretrained(str(base_path))
        peft_model = PeftModel.from_pretrained(base_model, str(path))
        base = peft_model.get_base_model()
        head = base.get_output_embeddings()
        if head is not None and head.weight is base.get_input_embeddings().weight:
            # The embedding update was trained on the input side only; merging it into a tied
            # matrix would move the output head too. Untie first.
            head.weight = torch.nn.Parameter(head.weight.detach().clone())
            base.config.tie_word_embeddings = False
        model = peft_model.merge_and_unload()
    elif model_type(path) is not None:
        model = _auto_for(path).from_pretrained(str(path))
    else:
        raise not_a_model(path, key)
    return model.float().eval().to(device), AutoTokenizer.from_pretrained(str(path), local_files_only=True)


TRAINING_DATA = "training_data.json"  # beside the weights: the dataset a model was trained on


def training_data(model_dir: str | Path) -> dict | None:
    """What ``model_dir`` records of the dataset it was trained on (``name``, ``sha256`` of its files),
    looked up through a peft adapter to its base model; None for a model from before the record."""
    model_dir = Path(model_dir)
    for folder in (model_dir, _adapter_base(model_dir)):
        if folder is not None and (folder / TRAINING_DATA).is_file():
            return json.loads((folder / TRAINING_DATA).read_text(encoding="utf-8"))
    return None


def _adapter_base(model_dir: Path) -> Path | None:
    config = model_dir / "adapter_config.json"
    if not config.is_file():
        return None
    base = Path(json.loads(config.read_text(encoding="utf-8")).get("base_model_name_or_path") or "")
    return base if base.is_absolute() else (model_dir / base).resolve()


def check_training_data(model_dir: str | Path, data_meta: dict, allow_other: bool = False) -> str | None:
    """ConfigError when the dataset ``data_meta`` (its meta.json) is not the one the model was
    trained on, unless ``allow_other``; returns a warning line to print (or None)."""
    record = training_data(model_dir)
    if record is None:
        return f"warning: {model_dir} does not record its training data; cannot check data_dir against it"
    if data_meta.get("sha256") == record.get("sha256"):
        return None
    what = (f"{model_dir} was trained on dataset {record.get('name')!r}, not on data_dir's "
            f"{data_meta.get('config', {}).get('name')!r} (their files differ)")  # fmt: skip
    if not allow_other:
        raise ConfigError(f"{what}; pass allow_other_data=true to score it anyway")
    return f"warning: {what}"
