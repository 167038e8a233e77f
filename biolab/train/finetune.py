"""QA finetuning on P_train people's questions: LoRA (the paper's recipe) or full.

LoRA (P3.1 App. D): low-rank updates of the query and value projections of every layer (rank
``lora_r``) plus a low-rank update of the word embedding (rank ``embed_r``), W' = W + 4 BA
(P3.2 App. B). GPT-NeoX and GPT-2 fuse q, k, v in one matrix; with ``qv_only`` the update's key
rows are held at zero, so only the q and v blocks change. Training runs in the same loop as
pretraining (``biolab.train.pretrain.train``).
"""

from __future__ import annotations

import hashlib
import itertools
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from biolab.config import from_dict
from biolab.data.masking import masked_qa, qa_parts, split_ids, with_mask_token
from biolab.data.tokens import Corpus, TextSet, pad_right
from biolab.errors import ConfigError
from biolab.io import file_sha256
from biolab.model import is_masked_lm, load_pretrained
from biolab.train.config import LOGGING_KEYS, TrainConfig
from biolab.train.log import check_wandb_meta
from biolab.train.pretrain import corpus_training_data, train
from biolab.train.run_folder import check_run_dir

# arch -> (attention modules to adapt, word embedding module, fused qkv layout)
TARGETS = {
    "gpt_neox": (["query_key_value"], "embed_in", "per_head"),  # per head [q | k | v]
    "gpt2": (["c_attn"], "wte", "blocks"),  # [q | k | v] over the whole width
    "llama": (["q_proj", "v_proj"], "embed_tokens", None),
    "modernbert": (["Wqkv"], "tok_embeddings", "blocks"),  # GBERT
}
STREAM_QA_FINETUNE = 21


@dataclass(frozen=True)
class FinetuneConfig:
    name: str = "lora"
    method: str = "lora"  # lora | full
    lora_r: int = 8
    lora_scale: float = 4.0  # W' = W + scale * B A
    embed_r: int = 128  # rank of the word-embedding update; 0 freezes the embedding
    qv_only: bool = True  # fused qkv: adapt the q and v blocks only
    loss_on: str = "answer"  # answer (and the EOS after it) | all (question too)

    @classmethod
    def from_dict(cls, d: dict) -> FinetuneConfig:
        return from_dict(cls, d, "finetune")

    def validate(self) -> None:
        if self.method not in ("lora", "full"):
            raise ConfigError(f"finetune.method must be lora or full, got {self.method!r}")
        if self.loss_on not in ("answer", "all"):
            raise ConfigError(f"finetune.loss_on must be answer or all, got {self.loss_on!r}")
        if self.method == "lora" and (self.lora_r < 1 or self.embed_r < 0):
            raise ConfigError("finetune.lora_r must be >= 1 and finetune.embed_r >= 0")


def finetune_configs(d: dict) -> tuple[FinetuneConfig, TrainConfig]:
    """A finetune preset (its own keys plus a nested ``train:``) as the two typed configs, validated."""
    own = {k: v for k, v in d.items() if k != "train"}
    # each from_dict validates: the train keys under the name the command line gives them
    return FinetuneConfig.from_dict(own), TrainConfig.from_dict(d["train"], "finetune.train")


def key_rows(layout: str, n_head: int, d_model: int) -> torch.Tensor:
    """Output rows of a fused qkv matrix that produce the keys."""
    hd = d_model // n_head
    if layout == "per_head":
        return torch.cat([torch.arange(h * 3 * hd + hd, h * 3 * hd + 2 * hd) for h in range(n_head)])
    return torch.arange(d_model, 2 * d_model)


def apply_lora(model, cfg: FinetuneConfig):
    """Wrap ``model`` with peft LoRA as configured; only the adapters train."""
    from peft import LoraConfig, get_peft_model

    arch = model.config.model_type
    if arch not in TARGETS:
        raise ConfigError(f"LoRA targets are defined for {sorted(TARGETS)}, not {arch!r}")
    attention, embedding, layout = TARGETS[arch]
    targets = attention + ([embedding] if cfg.embed_r else [])
    lora = LoraConfig(
        r=cfg.lora_r,
        lora_alpha=cfg.lora_scale * cfg.lora_r,  # peft scales by alpha / r
        target_modules=targets,
        rank_pattern={embedding: cfg.embed_r} if cfg.embed_r else {},
        alpha_pattern={embedding: cfg.lora_scale * cfg.embed_r} if cfg.embed_r else {},
        lora_dropout=0.0,
        bias="none",
        task_type=None if is_masked_lm(model) else "CAUSAL_LM",  # peft has no masked-LM task type
    )
    peft_model = get_peft_model(model, lora)
    if cfg.qv_only and layout is not None:
        rows = key_rows(layout, model.config.num_attention_heads, model.config.hidden_size)
        for name, module in peft_model.named_modules():
            if name.split(".")[-1] in attention and hasattr(module, "lora_B"):
                weight = module.lora_B["default"].weight  # (out, r), initialised to zero
                with torch.no_grad():
                    weight[rows] = 0
                weight.register_hook(lambda g, rows=rows: g.index_fill(0, rows.to(g.device), 0.0))
    return peft_model


class QABatches:
    """Shuffled P_train QA examples, ``[EOS] question Answer: value. [EOS]``, right-padded.

    Labels cover the answer and its closing EOS (``loss_on="answer"``) or every real token. ``texts``
    (a ``TextSet``, e.g. a Part 3.2 task set's items) replaces the corpus's QA; its ``answer`` marks
    where the loss starts (for an item written with its CoT hint, the hint). A masked LM gets
    ``masked=(mask id, period id, space id)`` (``biolab.data.masking.split_ids``): an example is then
    ``[EOS] question Answer:`` and one mask per answer token, labelled with the answer: the form the
    QA evaluation fills in."""

    def __init__(
        self, corpus: Corpus, seed: int, loss_on: str = "answer", texts: TextSet | None = None,
        masked: tuple[int, int, int | None] | None = None,
    ):  # fmt: skip
        self.texts = corpus.qa_set() if texts is None else texts
        self.corpus, self.seed, self.loss_on, self.masked = corpus, seed, loss_on, masked
        self.docs = self.texts.train_rows()  # the dataset's split, never recomputed
        if len(self.docs) == 0:
            raise ConfigError("the dataset has no P_train QA pairs")
        self.epoch, self.pos = 0, 0

    def _order(self) -> np.ndarray:
        rng = np.random.default_rng([self.seed, STREAM_QA_FINETUNE, self.epoch])
        return self.docs[rng.permutation(len(self.docs))]

    def next_batch(self, n: int) -> dict[str, np.ndarray]:
        picked = []
        order = self._order()
        while len(picked) < n:
            if self.pos == len(order):
                self.epoch, self.pos = self.epoch + 1, 0
                order = self._order()
            take = min(n - len(picked), len(order) - self.pos)
            picked.extend(order[self.pos : self.pos + take])
            self.pos += take
        t = self.texts
        if self.masked is not None:
            mask_id, period, space = self.masked
            examples = [masked_qa(*qa_parts(t, d, period, space), t.eos, mask_id) for d in picked]
            return _right_padded(examples, t.pad)
        seqs = [np.concatenate([[t.eos], t.text(d), [t.eos]]) for d in picked]
        width = max(len(s) for s in seqs)
        ids = np.full((n, width), t.pad, dtype=np.int64)
        labels = np.full((n, width), -100, dtype=np.int64)
        mask = np.zeros((n, width), dtype=np.int64)
        for i, (d, s) in enumerate(zip(picked, seqs, strict=True)):
            ids[i, : len(s)] = s
            mask[i, : len(s)] = 1
            first = 1 + int(t.arrays["answer"][d]) if self.loss_on == "answer" else 1
            labels[i, first : len(s)] = s[first:]
        return {"input_ids": ids, "labels": labels, "attention_mask": mask}

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "pos": self.pos}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.pos = int(state["epoch"]), int(state["pos"])


def _right_padded(examples: list[tuple[np.ndarray, np.ndarray]], pad: int) -> dict[str, np.ndarray]:
    ids, mask = pad_right([ids for ids, _ in examples], pad)
    labels, _ = pad_right([labels for _, labels in examples], -100)  # padding is never a target
    return {"input_ids": ids, "labels": labels, "attention_mask": mask}


def finetune(
    run_dir: str | Path,
    pretrained: str | Path,
    corpus: Corpus,
    cfg: FinetuneConfig,
    train_cfg: TrainConfig,
    overwrite: bool = False,
    progress: bool = True,
    on_step=None,
    texts: TextSet | None = None,
    wandb_meta: dict | None = None,
) -> dict:
    """Finetune ``pretrained`` on the P_train QAs of ``corpus`` (or on ``texts``' P_train rows, e.g.
    a Part 3.2 task set) into ``run_dir/model``; ``wandb_meta`` as in ``train``. A LoRA adapter
    names its base model by a path relative to itself."""
    cfg.validate()
    train_cfg.validate()
    check_wandb_meta(wandb_meta)
    finetune_run_config(run_dir)
    check_run_dir(run_dir, overwrite)
    # Absolute, so the adapter's saved base path is found from wherever the working directory was.
    pretrained = Path(pretrained).resolve()
    masked_lm = is_masked_lm(load_pretrained(pretrained))  # and a bad folder fails before any write
    tokenizer, masked = corpus.tokenizer(), None
    if masked_lm:
        if texts is not None:
            raise ConfigError("task-set finetuning needs a causal model (a masked LM answers QAs only)")
        tokenizer = with_mask_token(tokenizer)
        masked = (tokenizer.mask_token_id, *split_ids(tokenizer))

    def make_model():
        model = load_pretrained(pretrained)
        return apply_lora(model, cfg) if cfg.method == "lora" else model

    batches = QABatches(corpus, train_cfg.seed, cfg.loss_on, texts, masked)
    return train(
        run_dir, make_model, tokenizer, batches, train_cfg,
        config={"finetune": asdict(cfg), "pretrained": str(pretrained)},
        overwrite=overwrite, progress=progress, on_step=on_step, wandb_meta=wandb_meta,
        training_data=corpus_training_data(corpus),
    )  # fmt: skip


def finetune_run_config(run_dir: str | Path) -> dict | None:
    """The config.json of the finetune run in ``run_dir`` (None while it has none). Another kind of
    run there (a pretraining run has no ``finetune`` key) is refused: an overwrite would replace it."""
    path = Path(run_dir) / "config.json"
    if not path.is_file():
        return None
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        config = None
    if isinstance(config, dict) and "finetune" in config:
        return config
    kind = "a pretraining run" if isinstance(config, dict) and "model" in config else "a config.json"
    raise ConfigError(
        f"out={run_dir} holds {kind} (its config.json has no finetune key), not a finetune run; use a new out"
    )


def check_apart(out: str | Path, **inputs: str | Path) -> None:
    """``out`` neither is, holds nor lies inside an input of the same command: out=RUN with
    pretrained=RUN/model would replace the base model with its own adapter."""
    here = Path(out).resolve()
    for key, path in inputs.items():
        there = Path(path).resolve()
        relation = "is" if here == there else "holds" if here in there.parents else "is inside"
        if here == there or here in there.parents or there in here.parents:
            raise ConfigError(f"out={out} {relation} {key}={path}, an input of this command; use a new out")


def config_changes(config: dict, cfg: FinetuneConfig, train_cfg: TrainConfig, pretrained: Path) -> list[str]:
    """The keys that shape training in which a run's recorded ``config`` (its config.json) differs
    from these; logging and checkpointing keys (pretrain's LOGGING_KEYS) and a preset's name may
    differ. A checkpoint's record is not at hand here: a finished run may have kept none."""
    want = {"finetune": asdict(cfg), "train": asdict(train_cfg)}
    named = {"finetune": "finetune", "train": "finetune.train"}  # as the command line has them
    changed = [
        f"{named[section]}.{k}"
        for section, values in want.items()
        for k, v in values.items()
        if k not in LOGGING_KEYS and (config.get(section) or {}).get(k) != v
    ]
    then = Path(config.get("pretrained") or "")
    # a base no longer where it was is a root moved as a whole: the adapter finds its base itself
    if then.exists() and then.resolve() != Path(pretrained).resolve():
        changed.append("pretrained")
    return changed


def model_digest(model_dir: str | Path) -> str:
    """sha256 of a saved model's weights: what an evaluation of it records, so that one of other
    weights (a retrained run's) is never taken for it."""
    files = sorted(Path(model_dir).glob("*.safetensors"))
    return hashlib.sha256("".join(file_sha256(p) for p in files).encode()).hexdigest()


def check_grid(grid, finetune_cfg: dict) -> dict:
    """``grid`` checked before any work: a mapping of ``finetune.*`` keys (those of ``finetune_cfg``,
    the composed finetune section) to non-empty lists of distinct values; None is no grid."""
    example = "e.g. grid={finetune.lora_r: [4, 8]}"
    if grid is None:
        return {}
    if not isinstance(grid, dict):
        raise ConfigError(f"grid must map finetune keys to lists of values ({example}), got {grid!r}")
    for key, values in grid.items():
        if not _is_leaf(finetune_cfg, str(key)):
            valid = [f"finetune.{k}" for k in finetune_cfg if k != "train"] + ["finetune.train.*"]
            raise ConfigError(f"grid key {key!r} is not a finetune key; valid keys: {', '.join(valid)}")
        values = values if isinstance(values, list) else [values]
        if not values or len({str(v) for v in values}) < len(values):
            raise ConfigError(f"grid.{key} must list distinct values, at least one, got {values}")
    return grid


def _is_leaf(finetune_cfg: dict, key: str) -> bool:
    """Whether ``key`` (``finetune.lora_r``, ``finetune.train.lr``) names one value of the section."""
    section, _, rest = key.partition(".")
    node = {"finetune": finetune_cfg}
    for part in [section, *rest.split(".")] if rest else ["?"]:
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return not isinstance(node, dict)


def grid_points(finetune_cfg: dict, grid: dict | None) -> list[tuple[str, list[str], dict]]:
    """Every point of a finetune ``grid`` (checked first, see check_grid): its name, its overrides
    and the finetune section with them applied. The one place a grid is expanded: the finetune script
    and the pipeline's planner both take their runs from here."""
    from omegaconf import OmegaConf

    points = []
    for name, overrides in expand_grid(check_grid(grid, finetune_cfg)):
        merged = OmegaConf.merge({"finetune": finetune_cfg}, OmegaConf.from_dotlist(overrides))
        points.append((name, overrides, OmegaConf.to_container(merged, resolve=True)["finetune"]))
    return points


def expand_grid(grid: dict) -> list[tuple[str, list[str]]]:
    """``{"finetune.lora_r": [8, 16]}`` -> [("lora_r-8", ["finetune.lora_r=8"]), ...]; {} -> one run.

    Names hold no "=" so a run's path can be passed back as a Hydra override value."""
    if not grid:
        return [("run", [])]
    keys = sorted(grid)
    values = [grid[k] if isinstance(grid[k], list) else [grid[k]] for k in keys]
    return [
        ("_".join(f"{k.split('.')[-1]}-{v}" for k, v in zip(keys, combo, strict=True)),
         [f"{k}={v}" for k, v in zip(keys, combo, strict=True)])
        for combo in itertools.product(*values)
    ]  # fmt: skip
