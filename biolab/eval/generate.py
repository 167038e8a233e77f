"""Batched generation for every evaluation: left-padded batches with the KV cache, greedy or beam,
cut at EOS, each prompt after an EOS as every text is in training."""

from __future__ import annotations

import numpy as np
import torch
from tqdm.auto import tqdm

from biolab.device import keep_freed_memory

# Room past the longest expected continuation, so that an overrun is seen as wrong, not cut to right.
OVERRUN_TOKENS = 2


def max_new_tokens(tokenizer, continuations: list[str]) -> int:
    """Enough new tokens for the longest expected continuation, plus ``OVERRUN_TOKENS``."""
    ids = tokenizer(continuations, add_special_tokens=False)["input_ids"]
    return max(len(x) for x in ids) + OVERRUN_TOKENS


def prompt_ids(tokenizer, prompts: list[str]) -> list[list[int]]:
    eos = tokenizer.eos_token_id  # every training text starts after an EOS
    return [[eos, *ids] for ids in tokenizer(prompts, add_special_tokens=False)["input_ids"]]


def left_pad(seqs: list[list[int]], pad: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """``(ids [batch, width], attention_mask [batch, width])``, padded on the left."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, width - len(s) :] = torch.tensor(s)
        mask[i, width - len(s) :] = 1
    return ids.to(device), mask.to(device)


@torch.no_grad()
def generate_ids(
    model, tokenizer, seqs: list[list[int]], batch_size: int = 128, num_beams: int = 1,
    max_new_tokens: int = 24, progress: bool = False,
) -> list[list[int]]:  # fmt: skip
    """Greedy (or beam) continuations of token sequences, cut at EOS (the EOS itself dropped)."""
    device = next(model.parameters()).device
    keep_freed_memory(device)
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    order = np.argsort([len(s) for s in seqs], kind="stable")  # similar lengths share a batch
    out: list[list[int]] = [[] for _ in seqs]
    for s in tqdm(range(0, len(order), batch_size), desc="generate", disable=not progress):
        idx = order[s : s + batch_size]
        ids, mask = left_pad([seqs[i] for i in idx], pad, device)
        gen = model.generate(
            input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens, do_sample=False,
            num_beams=num_beams, eos_token_id=eos, pad_token_id=pad,
        )[:, ids.shape[1] :].tolist()  # fmt: skip
        for i, tokens in zip(idx, gen, strict=True):
            out[i] = tokens[: tokens.index(eos)] if eos in tokens else tokens
    return out


def generate_answers(
    model, tokenizer, prompts: list[str], batch_size: int = 128, num_beams: int = 1,
    max_new_tokens: int = 24, progress: bool = False,
) -> list[str]:  # fmt: skip
    """Decoded continuations of text prompts."""
    seqs = prompt_ids(tokenizer, prompts)
    gen = generate_ids(model, tokenizer, seqs, batch_size, num_beams, max_new_tokens, progress)
    return [tokenizer.decode(tokens) for tokens in gen]
