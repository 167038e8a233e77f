"""A training run's typed config (``train`` in conf/, ``finetune.train`` for a finetune), the keys
that never touch the weights (LOGGING_KEYS), and the error a run stops with."""

from __future__ import annotations

from dataclasses import dataclass

from biolab.config import from_dict
from biolab.errors import BiolabError, ConfigError

WANDB_MODES = ("offline", "online", "disabled")


class TrainingError(BiolabError):
    """Training stopped (e.g. a non-finite loss); the last good checkpoint is kept."""


@dataclass(frozen=True)
class TrainConfig:
    name: str = "tiny"
    steps: int = 1000
    exposures: int | None = None  # Part 3.3: steps so that each person's bio is seen this often (over steps)
    min_steps: int | None = None  # with exposures: halve batch_size until there are this many steps
    batch_size: int = 32  # sequences per optimizer step, over all processes
    micro_batch_size: int | None = None  # sequences per forward per process; default: all at once
    ctx: int = 128
    lr: float = 1e-3
    min_lr_ratio: float = 0.1  # cosine decays to lr * min_lr_ratio
    warmup_steps: int = 100
    weight_decay: float = 0.1
    adam_eps: float = 1e-6
    adam_beta2: float = 0.98
    grad_clip: float = 1.0
    seed: int = 0
    qa_ratio: float = 0.0  # mixed training: share of all-QA windows (paper QAr = 0.8); 0 = BIO only
    # Part 3.3 Results 10-11: share of windows of junk bios (people never measured; the corpus's
    # junk texts), 0.875 in the paper; exposures count the useful bios only
    junk_fraction: float = 0.0
    # Part 3.3's bioS(N): every exposure a fresh rendering of the dataset's format (new template draws,
    # new order; biolab.data.fresh) in place of the stored bios; the BIO side of qa_ratio / junk_fraction
    fresh_bios: bool = False
    precision: str = "auto"  # auto (bf16 on CUDA, fp32 on CPU) | no | bf16 | fp16
    compile: bool = False
    log_every: int = 10
    eval_every: int = 100  # BIO first-token accuracy; 0 = never
    eval_people: int = 200  # per split
    ckpt_every: int = 500  # 0 = only the final model
    keep_ckpts: int = 2
    wandb: str = "offline"  # offline | online | disabled

    @classmethod
    def from_dict(cls, d: dict, section: str = "train") -> TrainConfig:
        """``section``: where these keys sit in the user's config (``finetune.train`` for a finetune's),
        the name every error gives them."""
        cfg = from_dict(cls, d, section, validate=False)
        cfg.validate(section)
        return cfg

    def validate(self, section: str = "train") -> None:
        for k in ("steps", "batch_size", "ctx", "log_every", "eval_people", "keep_ckpts"):
            if getattr(self, k) < 1:
                raise ConfigError(f"{section}.{k} must be >= 1, got {getattr(self, k)}")
        for k in ("exposures", "min_steps"):
            if getattr(self, k) is not None and getattr(self, k) < 1:
                raise ConfigError(f"{section}.{k} must be null or >= 1, got {getattr(self, k)}")
        if self.min_steps is not None and self.exposures is None:
            # min_steps only halves the batch of an exposures plan: alone it would do nothing
            raise ConfigError(
                f"{section}.min_steps={self.min_steps} needs {section}.exposures (it halves the batch "
                f"until the exposures take that many steps); set {section}.min_steps=null"
            )
        for k in ("warmup_steps", "eval_every", "ckpt_every"):
            if getattr(self, k) < 0:
                raise ConfigError(f"{section}.{k} must be >= 0, got {getattr(self, k)}")
        if not 0 <= self.qa_ratio <= 1:
            raise ConfigError(f"{section}.qa_ratio must be in [0, 1], got {self.qa_ratio}")
        if not 0 <= self.junk_fraction < 1:
            raise ConfigError(f"{section}.junk_fraction must be in [0, 1), got {self.junk_fraction}")
        if self.junk_fraction and self.qa_ratio:
            raise ConfigError(f"{section}.junk_fraction and {section}.qa_ratio cannot both be > 0")
        if self.fresh_bios and section != "train":
            raise ConfigError(f"{section}.fresh_bios is for pretraining on bios: set it false")
        if self.precision not in ("auto", "no", "bf16", "fp16"):
            raise ConfigError(f"{section}.precision must be auto, no, bf16 or fp16, got {self.precision!r}")
        if self.wandb not in WANDB_MODES:
            raise ConfigError(f"{section}.wandb must be offline, online or disabled, got {self.wandb!r}")
        if self.lr <= 0 or not 0 <= self.min_lr_ratio <= 1:
            raise ConfigError(
                f"{section}.lr must be > 0 and {section}.min_lr_ratio in [0, 1], "
                f"got {self.lr} and {self.min_lr_ratio}"
            )


# TrainConfig keys a resumed run may change, because they never touch the weights' bytes: the
# preset's name (a label), how often the loss is logged (log_every), what is measured and how often
# (eval_every, eval_people: evaluation runs the model in eval mode under no_grad and draws no random
# numbers), how often the state is saved and how many saves are kept (ckpt_every, keep_ckpts: a run
# resumed from any checkpoint ends with the uninterrupted run's weights) and wandb. Every other key
# changes them: the schedule (steps, lr, warmup_steps, ...), the batches (seed, batch_size, ctx,
# qa_ratio, junk_fraction, fresh_bios, exposures) or the float rounding (precision, compile,
# micro_batch_size), so that "same seed, same bytes" would no longer hold. The pipeline's stage keys
# and run names leave the same keys out but the name (biolab.pipeline.cache.VOLATILE is built from
# this set).
LOGGING_KEYS = frozenset(
    {"name", "log_every", "eval_every", "eval_people", "ckpt_every", "keep_ckpts", "wandb"}
)
