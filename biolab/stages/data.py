"""The data and corpus stages: a dataset (people, bios, QA) written from its config, then tokenized."""

from __future__ import annotations

from pathlib import Path

from biolab.data.dataset import DataConfig, write_dataset
from biolab.data.tokens import TokenizerConfig, load_tokenizer, tokenize_dataset
from biolab.stages.kind import Kind


def build_data(cfg: dict, inputs: dict, out: Path, progress: bool, context: dict) -> None:
    write_dataset(DataConfig.from_dict(cfg), out, workers=1, progress=progress)


def build_corpus(cfg: dict, inputs: dict, out: Path, progress: bool, context: dict) -> None:
    tok = TokenizerConfig.from_dict(cfg["tokenizer"])
    tokenizer = load_tokenizer(tok.path) if tok.path else None
    tokenize_dataset(inputs["data"], out, tokenizer, tok.vocab_size)


def check_corpus(cfg: dict) -> None:
    TokenizerConfig.from_dict(cfg["tokenizer"])


DATA = Kind("data", ("meta.json", "people.jsonl", "bios.jsonl", "qa.jsonl"), build_data, DataConfig.from_dict)
CORPUS = Kind("corpus", ("meta.json", "bios.bin", "bios.npz", "qa.bin", "qa.npz", "tokenizer"), build_corpus,
              check_corpus)  # fmt: skip
