"""The pretraining stage: a model trained on the corpus's bios (mixed with its QA when
``train.qa_ratio`` is set), resumed from its own checkpoints."""

from __future__ import annotations

from pathlib import Path

from biolab.data.tokens import Corpus
from biolab.model import ModelConfig
from biolab.stages.kind import Kind, wandb_meta
from biolab.train.config import TrainConfig
from biolab.train.pretrain import pretrain


def build_pretrain(cfg: dict, inputs: dict, out: Path, progress: bool, context: dict) -> None:
    pretrain(out, Corpus(inputs["corpus"]), ModelConfig.from_dict(cfg["model"]),
             TrainConfig.from_dict(cfg["train"]), progress=progress,
             wandb_meta=wandb_meta("pretrain", inputs, out, context))  # fmt: skip


def check_training(cfg: dict) -> None:
    """The model and train sections of any stage that pretrains (also a manipulation task's mixed one)."""
    ModelConfig.from_dict(cfg["model"])
    TrainConfig.from_dict(cfg["train"]).validate()


PRETRAIN = Kind("pretrain", ("model",), build_pretrain, check_training, resumable=True, runs_model=True)
