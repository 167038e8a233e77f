"""Packing: documents shuffled globally every epoch, joined with EOS, cut into ``ctx`` windows.

A person's M bio entries land in unrelated windows (paper 3.2: windows that hold all of a
person's paraphrases collapse extraction from ~97% to ~7%). Mixed training (paper 3.3) draws each
window entirely from BIO or entirely from QA with probability ``qa_ratio``; Part 3.3's junk data
draws it from junk bios (people never measured) with probability ``train.junk_fraction``.

Streams are deterministic functions of (seed, epoch, position) and expose ``state_dict`` so a
resumed run continues with exactly the windows it would have seen. Part 3.3's bioS(N), every exposure
a fresh rendering, is ``biolab.data.fresh.FreshBioStream``: a BIO stream like ``WindowStream``.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

STREAM_BIO, STREAM_QA, STREAM_MIX, STREAM_JUNK = 11, 12, 13, 14
STREAM_FRESH_ORDER, STREAM_FRESH_BIO = 15, 16  # biolab.data.fresh: each pass's order, each bio's draws


class Windows(Protocol):
    """What MixedStream reads from each side: ``WindowStream`` or a fresh bio stream."""

    ctx: int

    def next_windows(self, n: int) -> np.ndarray: ...

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...


class WindowStream:
    """Endless ``ctx``-token windows over documents ``ids[offsets[d]:offsets[d+1]]``."""

    def __init__(
        self,
        ids: np.ndarray,
        offsets: np.ndarray,
        eos: int,
        ctx: int,
        seed: int,
        docs: np.ndarray | None = None,
        stream: int = STREAM_BIO,
    ):
        self.ids, self.offsets, self.eos, self.ctx = ids, np.asarray(offsets), eos, ctx
        self.seed, self.stream = seed, stream
        self.docs = np.arange(len(self.offsets) - 1) if docs is None else np.asarray(docs)
        if len(self.docs) == 0:
            raise ValueError("no documents to pack")
        n_tokens = int((self.offsets[self.docs + 1] - self.offsets[self.docs]).sum() + len(self.docs))
        if n_tokens < ctx:
            raise ValueError(f"{n_tokens} tokens in all documents, fewer than one window of {ctx}")
        self.epoch, self.pos = 0, 0
        self._tokens: np.ndarray | None = None

    def epoch_tokens(self, epoch: int) -> np.ndarray:
        """This epoch's stream: documents in a seeded random order, each followed by EOS."""
        order = self.docs[np.random.default_rng([self.seed, self.stream, epoch]).permutation(len(self.docs))]
        starts, ends = self.offsets[order], self.offsets[order + 1]
        lens = ends - starts + 1  # + EOS
        cum = np.concatenate([[0], np.cumsum(lens)])
        # token p of the stream comes from ids[starts[j] + (p - cum[j])] for the document j holding p
        src = np.arange(cum[-1]) + np.repeat(starts - cum[:-1], lens)
        tokens = np.asarray(self.ids[np.minimum(src, len(self.ids) - 1)], dtype=np.int64)
        tokens[cum[1:] - 1] = self.eos
        return tokens

    def next_windows(self, n: int) -> np.ndarray:
        out = np.empty((n, self.ctx), dtype=np.int64)
        for i in range(n):
            if self._tokens is None:
                self._tokens = self.epoch_tokens(self.epoch)
            if self.pos + self.ctx > len(self._tokens):  # drop the tail; next epoch
                self.epoch, self.pos = self.epoch + 1, 0
                self._tokens = self.epoch_tokens(self.epoch)
            out[i] = self._tokens[self.pos : self.pos + self.ctx]
            self.pos += self.ctx
        return out

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "pos": self.pos}

    def load_state_dict(self, state: dict) -> None:
        if state["epoch"] != self.epoch or self._tokens is None:
            self._tokens = None
        self.epoch, self.pos = int(state["epoch"]), int(state["pos"])


class MixedStream:
    """Each window is all-BIO or, with probability ``qa_ratio``, all from the other stream: QA in mixed
    training (paper: QAr = 0.8), junk bios in Part 3.3's junk data (7/8). The other stream keeps the
    name ``qa`` in the state a checkpoint holds."""

    def __init__(self, bio: Windows, qa: Windows | None, qa_ratio: float, seed: int):
        if qa_ratio > 0 and qa is None:
            raise ValueError("qa_ratio > 0 needs a QA stream")
        self.bio, self.qa, self.qa_ratio, self.seed = bio, qa, qa_ratio, seed
        self.windows = 0

    def next_windows(self, n: int) -> np.ndarray:
        if self.qa_ratio <= 0:
            self.windows += n
            return self.bio.next_windows(n)
        # the choice for window w depends only on (seed, w): resumable and independent of batching
        u = np.array([np.random.default_rng([self.seed, STREAM_MIX, w]).random()
                      for w in range(self.windows, self.windows + n)])  # fmt: skip
        self.windows += n
        is_qa = u < self.qa_ratio
        out = np.empty((n, self.bio.ctx), dtype=np.int64)
        if (~is_qa).any():
            out[~is_qa] = self.bio.next_windows(int((~is_qa).sum()))
        if is_qa.any():
            out[is_qa] = self.qa.next_windows(int(is_qa.sum()))
        return out

    def next_batch(self, n: int) -> dict[str, np.ndarray]:
        """The training loop's interface: causal LM on the windows themselves."""
        return {"input_ids": self.next_windows(n)}

    def state_dict(self) -> dict:
        return {
            "windows": self.windows,
            "bio": self.bio.state_dict(),
            "qa": self.qa.state_dict() if self.qa is not None else None,
        }

    def load_state_dict(self, state: dict) -> None:
        self.windows = int(state["windows"])
        self.bio.load_state_dict(state["bio"])
        if self.qa is not None and state["qa"] is not None:
            self.qa.load_state_dict(state["qa"])
