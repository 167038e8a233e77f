"""Masked-LM batches for the one training loop: whole-word masked windows (pretraining, also mixed
with QA windows) and masked QA examples (finetuning); the masking itself is ``biolab.data.masking``."""

from __future__ import annotations

import numpy as np

from biolab.data.masking import mask_words, special_table, word_start_table
from biolab.data.packing import MixedStream

STREAM_MLM = 31


class MaskedStream:
    """A window stream (``MixedStream``: BIO windows, and QA windows in mixed training) as
    whole-word masked-LM batches; the masks of batch b depend only on (seed, b), so a resumed run
    masks as the uninterrupted one did."""

    def __init__(self, stream: MixedStream, tokenizer, seed: int):
        self.stream, self.seed, self.batches = stream, seed, 0
        self.starts, self.special = word_start_table(tokenizer), special_table(tokenizer)
        self.mask_id = int(tokenizer.mask_token_id)

    def next_batch(self, n: int) -> dict[str, np.ndarray]:
        rng = np.random.default_rng([self.seed, STREAM_MLM, self.batches])
        self.batches += 1
        ids, labels = mask_words(self.stream.next_windows(n), self.starts, self.special, self.mask_id, rng)
        return {"input_ids": ids, "labels": labels}

    def state_dict(self) -> dict:
        return {"batches": self.batches, "stream": self.stream.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.batches = int(state["batches"])
        self.stream.load_state_dict(state["stream"])
