"""bioD(N, K, C, D, L, T) (Part 3.3 Definition 2.2): synthetic knowledge with more bits per token.

Each of K attributes has its own vocabulary of D distinct chunks, each chunk L symbols out of an
alphabet of T; a person's value of an attribute is C chunks drawn uniformly from it. A bio states
the K values in a random order with one fixed template, the full name only in the first sentence:

    Anya Briar Forger's ID 3 is qf ab, kz dd. Their ID 1 is mo bx, ea lt.     (C = 2, L = 2)

("Their" for everyone: unlike the paper's "Her", no sentence carries a gender, which the bits of
bioD do not count.) Names, their uniqueness and the train/test split come from ``sample_people``;
``multi`` entries per person are ``multi`` fresh sentence orders (exposures of new renderings).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from biolab.config import from_dict
from biolab.data.bios import Bio
from biolab.errors import ConfigError

STREAM_VOCAB, STREAM_VALUES, STREAM_ORDER = 31, 32, 33
MAX_VOCAB_TRIES = 64


@dataclass(frozen=True)
class BioDConfig:
    """The ``data.biod`` section (with ``data.style: bioD``)."""

    K: int = 4  # attributes
    C: int = 4  # chunks per value
    D: int = 128  # distinct chunks per attribute (its vocabulary)
    L: int = 1  # symbols per chunk
    T: int = 256  # alphabet size

    @classmethod
    def from_dict(cls, d: dict | None) -> BioDConfig:
        return from_dict(cls, dict(d or {}), "data.biod")

    def validate(self) -> None:
        for k in ("K", "C", "D", "L", "T"):
            if getattr(self, k) < 1:
                raise ConfigError(f"data.biod.{k} must be >= 1, got {getattr(self, k)}")
        if self.D > self.T**self.L:
            raise ConfigError(
                f"data.biod.D={self.D} distinct chunks do not fit in T^L = {self.T}^{self.L} "
                f"= {self.T**self.L}"
            )

    def attributes(self) -> list[str]:
        return [f"ID {k + 1}" for k in range(self.K)]


def symbol(i: int, width: int) -> str:
    """Symbol ``i`` as ``width`` lowercase letters: letters only, so that the byte-level
    pre-tokenizer keeps a symbol in one piece (it splits "s162" into "s" and "162")."""
    out = []
    for _ in range(width):
        i, r = divmod(i, 26)
        out.append(chr(ord("a") + r))
    return "".join(reversed(out))


def symbol_width(T: int) -> int:
    return max(1, math.ceil(math.log(T, 26) - 1e-9))


def chunk_vocabularies(cfg: BioDConfig, seed: int) -> np.ndarray:
    """(K, D, L) symbol indices: each attribute's D distinct chunks, drawn uniformly from T^L."""
    rng = np.random.default_rng([seed, STREAM_VOCAB])
    out = np.empty((cfg.K, cfg.D, cfg.L), dtype=np.int64)
    for k in range(cfg.K):
        chunks: dict[tuple, None] = {}
        for _ in range(MAX_VOCAB_TRIES):
            draw = rng.integers(0, cfg.T, size=(2 * (cfg.D - len(chunks)) + 8, cfg.L))
            for row in map(tuple, draw.tolist()):
                chunks.setdefault(row, None)
                if len(chunks) == cfg.D:
                    break
            if len(chunks) == cfg.D:
                break
        else:  # only when D is nearly all of T^L: enumerate what is left instead
            raise ConfigError(f"data.biod: could not draw D={cfg.D} distinct chunks from T^L; lower D")
        out[k] = np.array(list(chunks), dtype=np.int64)
    return out


def sample_values(cfg: BioDConfig, n: int, seed: int) -> np.ndarray:
    """(n, K, C) chunk indices into each attribute's vocabulary."""
    return np.random.default_rng([seed, STREAM_VALUES]).integers(0, cfg.D, size=(n, cfg.K, cfg.C))


def value_texts(cfg: BioDConfig, vocab: np.ndarray, values: np.ndarray) -> list[list[str]]:
    """Per person, per attribute: the value as text, symbols joined by " ", chunks by ", " (by " "
    when a chunk is one symbol: a comma per chunk would be a token that carries nothing)."""
    w = symbol_width(cfg.T)
    words = [[" ".join(symbol(s, w) for s in vocab[k, d]) for d in range(cfg.D)] for k in range(cfg.K)]
    sep = ", " if cfg.L > 1 else " "
    return [
        [sep.join(words[k][c] for c in row) for k, row in enumerate(person)] for person in values.tolist()
    ]


def render_biod(people: list, texts: list[list[str]], cfg: BioDConfig, multi: int, seed: int) -> list[Bio]:
    """``multi`` bios per person, each in a fresh random order of the K sentences."""
    attrs = cfg.attributes()
    rng = np.random.default_rng([seed, STREAM_ORDER])
    bios = []
    for person, values in zip(people, texts, strict=True):
        for entry in range(multi):
            parts, spans = [], {"name": [[0, len(person.full_name)]]}
            pos = 0
            for j, k in enumerate(rng.permutation(cfg.K).tolist()):
                head = f"{person.full_name}'s {attrs[k]} is " if j == 0 else f" Their {attrs[k]} is "
                start = pos + len(head)
                spans[attrs[k]] = [start, start + len(values[k])]
                sentence = f"{head}{values[k]}."
                parts.append(sentence)
                pos += len(sentence)
            ordered = {a: spans[a] for a in attrs}
            bios.append(Bio(person.id, entry, "".join(parts), {**ordered, "name": spans["name"]}))
    return bios


def biod_bits(cfg: BioDConfig, n_people: int, n_names: int) -> dict:
    """Knowledge in bioD at zero loss (Theorem 3.2's three terms, in bits): names, values, and the
    diversity term, the bits of the K chunk vocabularies themselves."""
    name = math.log2((n_names - n_people) / n_people)
    values = cfg.K * cfg.C * math.log2(cfg.D)
    space = cfg.T**cfg.L
    diversity = cfg.K * cfg.D * max(0.0, math.log2((space - cfg.D) / cfg.D)) if space > cfg.D else 0.0
    return {
        "name": round(name, 4),
        "attributes": round(values, 4),
        "diversity_total": round(diversity, 4),
        "total": round(name + values, 4),
        "note": "per person; diversity_total is for the whole dataset (K*D*log2((T^L-D)/D))",
    }
