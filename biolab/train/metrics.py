"""Measurements taken while training: BIO first-token accuracy per attribute (paper Figure 1b)."""

from __future__ import annotations

import numpy as np
import torch

from biolab.data.dataset import read_meta
from biolab.data.people import ATTRIBUTES
from biolab.data.tokens import Corpus


def corpus_attributes(corpus: Corpus) -> list[str]:
    """The names of the attributes whose spans the corpus's bios hold (``bios.npz`` ``attr``): the
    dataset's own (a bioD dataset has K of its own, named in its meta.json), or the six. A dataset
    moved since tokenization keeps its spans, so the names then fall back to the six or to positions."""
    k = corpus.bios["attr"].shape[1]
    try:
        names = list(read_meta(corpus.meta["data_dir"]).get("attributes", ATTRIBUTES))
    except (OSError, ValueError, KeyError):
        names = list(ATTRIBUTES)
    return names if len(names) == k else [f"attribute {i + 1}" for i in range(k)]


def eval_bios(corpus: Corpus, n_people: int) -> dict[str, np.ndarray]:
    """A fixed sample: entry 0 of the first ``n_people`` people (by id) of each split."""
    b = corpus.bios
    out = {}
    for name, flag in (("train", 1), ("test", 0)):
        idx = np.flatnonzero((b["split"] == flag) & (b["entry"] == 0))
        out[name] = idx[np.argsort(b["person_id"][idx], kind="stable")][:n_people]
    return out


@torch.no_grad()
def bio_first_token_accuracy(
    model, corpus: Corpus, bios: np.ndarray, batch_size: int = 64, attributes: list[str] | None = None
) -> dict:
    """Teacher-forced next-token accuracy on the first token of each attribute inside each bio.

    Each bio is fed as ``[EOS] + bio``, the context it has in packed training windows.
    Returns {attribute: accuracy} plus "mean"; ``attributes``: ``corpus_attributes(corpus)``, passed
    by a caller that measures often, to read the dataset's meta.json once."""
    attributes = corpus_attributes(corpus) if attributes is None else attributes
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    hits = np.zeros(len(attributes))
    for s in range(0, len(bios), batch_size):
        chunk = bios[s : s + batch_size]
        seqs = [np.concatenate([[corpus.eos], corpus.bio(i)]) for i in chunk]
        width = max(len(x) for x in seqs)
        x = np.full((len(seqs), width), corpus.pad, dtype=np.int64)
        mask = np.zeros((len(seqs), width), dtype=np.int64)
        for j, seq in enumerate(seqs):
            x[j, : len(seq)] = seq
            mask[j, : len(seq)] = 1
        logits = model(
            input_ids=torch.from_numpy(x).to(device), attention_mask=torch.from_numpy(mask).to(device)
        ).logits
        # the attribute's first token sits at bio position p, i.e. input position p + 1,
        # and is predicted by the logits at input position p
        pos = torch.from_numpy(corpus.bios["attr"][chunk, :, 0].astype(np.int64)).to(device)
        pred = logits.argmax(-1).gather(1, pos)
        target = torch.from_numpy(x).to(device).gather(1, pos + 1)
        hits += (pred == target).sum(0).cpu().numpy()
    if was_training:
        model.train()
    acc = {a: float(h / len(bios)) for a, h in zip(attributes, hits, strict=True)}
    acc["mean"] = float(np.mean(list(acc.values())))
    return acc
