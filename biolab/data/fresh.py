"""bioS(N) as Part 3.3 trains it: every exposure of a person a fresh rendering of their bio (new
template draws, new sentence order), so 1000 exposures are 1000 different bios, not ten passes over
100 stored ones (``train.fresh_bios``).

Pass e shows every person of the dataset once, in an order seeded by (seed, e). Person p's bio in
pass e comes from the dataset's own renderer and templates (its style, fullname, permute, couple,
reverse), one entry (``multi`` is how often a stored dataset repeats a person), drawn from the random
stream of (seed, p, e) alone. As in ``WindowStream``'s epoch, a pass's bios, each followed by EOS, are
cut into ``ctx`` windows and the tail that fills no window is dropped.

The bios are rendered and tokenized a chunk of people at a time, when the windows reach the end of
what is rendered: memory holds about one chunk whatever the exposures. The windows depend on
(seed, position in the stream) only: not on the chunk size, nor on how many windows a call asks for,
and a stream loaded from ``state_dict`` continues with the windows an uninterrupted one would give.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from biolab.data.bios import Bio, render_bios_bioR, render_bios_bioS
from biolab.data.dataset import DataConfig, iter_jsonl, read_meta
from biolab.data.packing import STREAM_FRESH_BIO, STREAM_FRESH_ORDER
from biolab.data.people import Person
from biolab.data.templates import STYLES, TemplateSet, load_templates
from biolab.data.tokens import Corpus, WordCacheEncoder, tokenize_texts, word_cache_applies
from biolab.errors import ConfigError, DataFileError

CHUNK = 2048  # people rendered and tokenized at a time: ~180k tokens of bioS (vocab 2048)


def check_fresh_format(cfg: DataConfig) -> None:
    """Fresh bios need a format drawn from templates, one for everyone."""
    if cfg.style not in STYLES:
        raise ConfigError(
            f"train.fresh_bios renders bios from templates ({' or '.join(STYLES)}); data.style={cfg.style} "
            "has none: set train.fresh_bios=false"
        )
    if cfg.n_celebrities:
        raise ConfigError("train.fresh_bios renders one format for everyone: it needs data.n_celebrities=0")


def fresh_format(cfg: DataConfig) -> DataConfig:
    """The dataset's format for one fresh entry: one template draw, in a shuffled order where the
    dataset shuffles (permute >= 1), in its fixed order where it does not."""
    return dataclasses.replace(cfg, multi=1, permute=min(cfg.permute, 1))


class PersonStreams:
    """The numpy Generator that ``plan_bios_bioS`` draws from, for n people at once: a draw of shape
    (n, ...) takes row i from person i's own Generator. A person's bio then depends on its own stream
    alone, not on who shares its chunk, and a chunk is still planned in one call. Measured on 2 loaded
    cores, a bio: 600 us with one render_bios_bioS call per person, 80 us in a chunk of 2048 with
    these streams (their Generators are most of it), 19 us with one Generator for the chunk."""

    def __init__(self, generators: list[np.random.Generator]):
        self.generators = generators

    def row_shape(self, size) -> tuple[int, ...]:
        """The shape of one person's row in a draw of ``size``; a draw not split by person is refused."""
        shape = (size,) if isinstance(size, int) else tuple(size or ())
        if not shape or shape[0] != len(self.generators):
            raise ValueError(f"a draw of shape {shape} is not one row per person ({len(self.generators)})")
        return shape[1:]

    def integers(self, low, high=None, size=None) -> np.ndarray:
        shape = self.row_shape(size)
        return np.stack([g.integers(low, high, size=shape) for g in self.generators])

    def random(self, size=None) -> np.ndarray:
        shape = self.row_shape(size)
        return np.stack([g.random(shape) for g in self.generators])


def person_rng(seed: int, person_id: int, epoch: int) -> np.random.Generator:
    """The random stream of one person's bio in pass ``epoch``."""
    return np.random.default_rng([seed, STREAM_FRESH_BIO, person_id, epoch])


class TextEncoder:
    """Token ids of texts, the same as ``tokenize_texts`` gives the corpus, with the word cache kept
    from chunk to chunk (``encode_batches`` starts a new one every call)."""

    def __init__(self, tokenizer):
        backend = tokenizer.backend_tokenizer
        self.tokenizer = tokenizer
        self.specials = [t for t in tokenizer.all_special_tokens if t]
        self.cached = WordCacheEncoder(backend) if word_cache_applies(backend) else None

    def __call__(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """(flat ids, each text's length in tokens)."""
        if self.cached is not None and not any(sp in t for t in texts for sp in self.specials):
            ids, lengths, _ = self.cached(texts)
            return ids, lengths
        ids, offsets, _ = tokenize_texts(self.tokenizer, texts, fast=False)
        return ids, np.diff(offsets)


def join_documents(ids: np.ndarray, lengths: np.ndarray, prefix: tuple[int, ...], eos: int):
    """The documents ``ids`` (split by ``lengths``), each as ``prefix``, its ids, EOS, one after the
    other; and each document's end in that stream."""
    sizes = lengths + len(prefix) + 1
    ends = np.cumsum(sizes)
    starts = ends - sizes
    out = np.empty(int(ends[-1]), dtype=np.int64)
    within = np.arange(len(ids)) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    out[np.repeat(starts + len(prefix), lengths) + within] = ids
    for k, token in enumerate(prefix):
        out[starts + k] = token
    out[ends - 1] = eos
    return out, ends


class FreshBios:
    """A dataset's people in its format, rendered afresh in every pass of a seeded stream."""

    def __init__(self, cfg: DataConfig, people: list[Person], templates: TemplateSet, seed: int,
                 encode: TextEncoder, prefix: tuple[int, ...] = ()):  # fmt: skip
        check_fresh_format(cfg)
        if not people:
            raise ValueError("no people to render")
        self.cfg, self.people, self.templates = fresh_format(cfg), people, templates
        self.seed, self.encode, self.prefix = seed, encode, prefix

    def order(self, epoch: int) -> np.ndarray:
        """Pass ``epoch``: every person once, as indices into ``people``."""
        return np.random.default_rng([self.seed, STREAM_FRESH_ORDER, epoch]).permutation(len(self.people))

    def render(self, epoch: int, rows: np.ndarray) -> list[Bio]:
        """The bios of ``people[rows]`` in pass ``epoch``, one each, in that order."""
        people = [self.people[i] for i in rows.tolist()]
        c = self.cfg
        if c.style == "bioS":
            draws = PersonStreams([person_rng(self.seed, p.id, epoch) for p in people])
            return render_bios_bioS(
                people, self.templates, draws, 1, c.permute, c.fullname, c.couple, c.reverse
            )
        # bioR draws its numbers in blocks, not by person: one call each (~1.7 ms a bio)
        return [
            render_bios_bioR([p], self.templates, person_rng(self.seed, p.id, epoch), 1, c.fullname,
                             c.merge_prob, c.max_fillers, c.connective_prob)[0]
            for p in people
        ]  # fmt: skip

    def tokens(self, epoch: int, rows: np.ndarray, eos: int) -> tuple[np.ndarray, np.ndarray]:
        """The bios of ``people[rows]`` in pass ``epoch`` as one token stream, each after the corpus's
        prefix (its DOMAIN token, if any) and before an EOS; and where each ends in it."""
        ids, lengths = self.encode([b.text for b in self.render(epoch, rows)])
        return join_documents(ids, lengths, self.prefix, eos)

    def mean_tokens(self, eos: int, sample: int = CHUNK) -> float:
        """Tokens of a fresh bio and its EOS, on average over the stream's first ``sample`` bios (the
        first passes whole while people are fewer). A rendered sample rather than the stored bios: a
        tokenizer trained on few stored bios learns their phrases, and fresh renderings came out 6%
        longer than the stored entry-0 bios (40 people, vocab 2048; within 0.5% at 1000 people)."""
        total = count = epoch = 0
        while count < sample:
            _, ends = self.tokens(epoch, self.order(epoch)[: sample - count], eos)
            total, count, epoch = total + int(ends[-1]), count + len(ends), epoch + 1
        return total / count


class FreshBioStream:
    """Endless ``ctx``-token windows of fresh bios: pass after pass of ``bios``, each cut like a
    ``WindowStream`` epoch. The state is (pass, the pass's bio the unread tokens start in, the offset
    of the next window in that bio's tokens)."""

    def __init__(self, bios: FreshBios, eos: int, ctx: int, chunk: int = CHUNK):
        if chunk < 1:
            raise ValueError(f"chunk must be >= 1, got {chunk}")
        self.bios, self.eos, self.ctx, self.chunk = bios, eos, ctx, chunk
        self.start_pass(0)

    def start_pass(self, epoch: int, first: int = 0, pos: int = 0) -> None:
        self.epoch, self.order = epoch, self.bios.order(epoch)
        self.first = self.rendered = first  # the buffer's first bio, the next bio to render (pass order)
        self.pos = pos  # the next window's start in the buffer
        self.tokens = np.empty(0, dtype=np.int64)
        self.ends = np.empty(0, dtype=np.int64)  # each buffered bio's end in the buffer

    def read_bios(self) -> tuple[int, int]:
        """(bios the windows so far have passed, their tokens): where the buffer could start."""
        done = int(np.searchsorted(self.ends, self.pos, side="right"))
        return done, int(self.ends[done - 1]) if done else 0

    def render_chunk(self) -> bool:
        """The next chunk of this pass into the buffer, the bios already read dropped from it;
        False at the end of the pass."""
        if self.rendered == len(self.order):
            return False
        rows = self.order[self.rendered : self.rendered + self.chunk]
        tokens, ends = self.bios.tokens(self.epoch, rows, self.eos)
        done, cut = self.read_bios()
        self.first, self.pos = self.first + done, self.pos - cut
        self.ends = np.concatenate([self.ends[done:] - cut, ends + (len(self.tokens) - cut)])
        self.tokens = np.concatenate([self.tokens[cut:], tokens])
        self.rendered += len(rows)
        return True

    def next_window(self) -> np.ndarray:
        while self.pos + self.ctx > len(self.tokens):
            if self.render_chunk():
                continue
            if self.first == 0 and self.pos == 0:
                raise ValueError(f"pass {self.epoch} has {len(self.tokens)} tokens, fewer than one window")
            self.start_pass(self.epoch + 1)  # the tail that fills no window is dropped
        window = self.tokens[self.pos : self.pos + self.ctx]
        self.pos += self.ctx
        return window

    def next_windows(self, n: int) -> np.ndarray:
        out = np.empty((n, self.ctx), dtype=np.int64)
        for i in range(n):
            out[i] = self.next_window()
        return out

    def state_dict(self) -> dict:
        done, cut = self.read_bios()
        return {"epoch": self.epoch, "bio": self.first + done, "pos": self.pos - cut}

    def load_state_dict(self, state: dict) -> None:
        if "bio" not in state:
            raise ValueError(f"not the state of a fresh bio stream: {sorted(state)}")
        self.start_pass(int(state["epoch"]), int(state["bio"]), int(state["pos"]))


def fresh_bios(corpus: Corpus, seed: int) -> FreshBios:
    """The people and format of the dataset ``corpus`` was tokenized from, its tokenizer and the DOMAIN
    token its bios start with (if they do)."""
    data_dir = Path(corpus.meta["data_dir"])
    meta = read_meta(data_dir)
    if meta["sha256"] != corpus.meta["data_sha256"]:
        raise DataFileError(f"{data_dir} holds another dataset than the one {corpus.dir} was tokenized from")
    cfg = DataConfig.from_dict(meta["config"])
    check_fresh_format(cfg)
    people = [Person(**d) for d in iter_jsonl(data_dir / "people.jsonl")]
    prefix = () if corpus.domain_token_id is None else (corpus.domain_token_id,)
    templates = load_templates(cfg.style, cfg.templates)
    return FreshBios(cfg, people, templates, seed, TextEncoder(corpus.tokenizer()), prefix)


def fresh_bio_stream(corpus: Corpus, ctx: int, seed: int, chunk: int = CHUNK) -> FreshBioStream:
    """The corpus's people, a fresh bio each per pass, in ``ctx`` windows (``train.fresh_bios``)."""
    return FreshBioStream(fresh_bios(corpus, seed), corpus.eos, ctx, chunk)
