"""The data and corpus stages: a dataset (people, bios, QA) written from its config, then tokenized."""

from __future__ import annotations

from pathlib import Path

from biolab.data.dataset import DataConfig, write_dataset
from biolab.data.llm_bios import LLM_STYLE
from biolab.data.tokens import TokenizerConfig, load_tokenizer, tokenize_dataset
from biolab.stages.kind import Kind

LLM_CACHE = "llm-cache"  # in the data stage's folder: the bios written so far, kept across a kill


def build_data(cfg: dict, inputs: dict, out: Path, progress: bool, context: dict) -> None:
    data = DataConfig.from_dict(cfg)
    # bioR_llm's bios are cached in the stage folder, not beside ``out`` (a temp folder a kill loses),
    # so that the next run resumes a killed generation; write_dataset removes the cache once done
    cache = (
        Path(context["stage_dir"]) / LLM_CACHE if data.style == LLM_STYLE and "stage_dir" in context else None
    )
    write_dataset(data, out, workers=1, progress=progress, llm_cache=cache)


def build_corpus(cfg: dict, inputs: dict, out: Path, progress: bool, context: dict) -> None:
    tok = TokenizerConfig.from_dict(cfg["tokenizer"])
    tokenizer = load_tokenizer(tok.path) if tok.path else None
    tokenize_dataset(inputs["data"], out, tokenizer, tok.vocab_size, junk_dir=inputs.get("junk"),
                     domain_token=tok.domain_token)  # fmt: skip


def check_corpus(cfg: dict) -> None:
    TokenizerConfig.from_dict(cfg["tokenizer"])


DATA = Kind("data", ("meta.json", "people.jsonl", "bios.jsonl", "qa.jsonl"), build_data, DataConfig.from_dict)
CORPUS = Kind("corpus", ("meta.json", "bios.bin", "bios.npz", "qa.bin", "qa.npz", "tokenizer"), build_corpus,
              check_corpus)  # fmt: skip
