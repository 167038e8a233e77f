"""QA answers of a masked LM (the paper's GBERT): ``[EOS] question Answer:`` and one mask token per
answer token, all filled in one bidirectional forward pass; nothing is generated left to right."""

from __future__ import annotations

import numpy as np
import torch
from tqdm.auto import tqdm

from biolab.data.masking import answer_ids
from biolab.eval.generate import prompt_ids


@torch.no_grad()
def fill_answers(
    model, tokenizer, prompts: list[str], answers: list[str], batch_size: int = 128, progress: bool = False
) -> tuple[list[str], np.ndarray]:
    """(decoded predictions, first-token hits): each prompt gets as many masks as its gold answer
    has tokens (the number of masks is the one thing the answer gives away); right-padded, with the
    padding masked out of attention."""
    if tokenizer.mask_token_id is None:
        raise ValueError("the tokenizer has no mask token: not a masked-LM model folder")
    device = next(model.parameters()).device
    mask_id, pad = tokenizer.mask_token_id, tokenizer.pad_token_id
    golds = [answer_ids(tokenizer, a) for a in answers]
    seqs = [[*p, *([mask_id] * len(g))] for p, g in zip(prompt_ids(tokenizer, prompts), golds, strict=True)]
    preds: list[str] = [""] * len(seqs)
    first = np.zeros(len(seqs), dtype=bool)
    order = np.argsort([len(s) for s in seqs], kind="stable")
    for s in tqdm(range(0, len(order), batch_size), desc="fill masks", disable=not progress):
        idx = order[s : s + batch_size]
        width = max(len(seqs[i]) for i in idx)
        ids = torch.full((len(idx), width), pad, dtype=torch.long)
        attn = torch.zeros((len(idx), width), dtype=torch.long)
        for row, i in enumerate(idx):
            ids[row, : len(seqs[i])] = torch.tensor(seqs[i])
            attn[row, : len(seqs[i])] = 1
        logits = model(input_ids=ids.to(device), attention_mask=attn.to(device)).logits
        best = logits.argmax(-1).cpu().numpy()
        for row, i in enumerate(idx):
            k, end = len(golds[i]), len(seqs[i])
            filled = best[row, end - k : end]
            preds[i] = tokenizer.decode(filled.tolist())
            first[i] = filled[0] == golds[i][0]
    return preds, first
