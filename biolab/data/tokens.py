"""Tokenizer (train a byte-level BPE on our corpus, or load a local one) and the tokenized corpus:
flat token ids in a memmap plus, per bio, its offsets and the token positions of every attribute.

Corpus folder layout (``tokenize_dataset``):
    bios.bin      flat token ids of all bios, no separators (uint16 when the vocab fits)
    bios.npz      offsets (n+1), person_id, entry, split (1 = train), attr (n, 6, 2), name (n, 2):
                  attr[i, k] = [first token, end token) of attribute k inside bio i
    qa.bin/.npz   the six QA texts of every person, offsets, person_id, attribute, split,
                  answer = index of the first answer token inside each QA text
    tokenizer/    the tokenizer (AutoTokenizer.from_pretrained loads it)
    meta.json     counts, dtype, special ids, tokens per bio statistics
"""

from __future__ import annotations

import json
import multiprocessing as mp
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import regex
from tqdm.auto import tqdm

from biolab.config import from_dict
from biolab.data.dataset import iter_jsonl, read_meta, write_dataset
from biolab.data.people import ATTRIBUTES
from biolab.data.qa import format_prompt, format_qa
from biolab.errors import ConfigError, DataFileError
from biolab.io import atomic_dir, write_json

EOS = "<|endoftext|>"
PAD = "<|pad|>"
# Part 3.3 Result 12: a reserved token before every useful bio (a domain name, say), told apart from
# the junk bios that carry none
DOMAIN = "<|domain|>"
JUNK = "junk"  # the corpus's junk bios (Results 10-11): junk.bin / junk.npz / junk.json, a TextSet
BATCH = 8192
MIN_VOCAB = 260  # 256 bytes + the specials


@dataclass(frozen=True)
class TokenizerConfig:
    """The ``tokenizer`` section: a local tokenizer, or the size of the BPE trained on the data; with
    ``domain_token``, the reserved DOMAIN token added and put before every bio of the dataset."""

    path: str | None = None  # a tokenizer folder or tokenizer.json (None: train a BPE)
    vocab_size: int = 2048
    domain_token: bool = False

    @classmethod
    def from_dict(cls, d: dict) -> TokenizerConfig:
        return from_dict(cls, d, "tokenizer")

    def validate(self) -> None:
        if self.path is None:  # a given tokenizer brings its own vocabulary
            check_vocab_size(self.vocab_size)


def check_vocab_size(vocab_size) -> None:
    if not isinstance(vocab_size, int) or isinstance(vocab_size, bool) or vocab_size < MIN_VOCAB:
        raise ConfigError(
            f"tokenizer vocab_size must be >= {MIN_VOCAB} (256 bytes + specials), an int; got {vocab_size!r}"
        )


def train_tokenizer(texts, vocab_size: int):
    """A byte-level BPE trained on ``texts`` with EOS (also BOS) and PAD, as an HF fast tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    check_vocab_size(vocab_size)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=True)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS, PAD],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS, bos_token=EOS, pad_token=PAD)


def load_tokenizer(path: str | Path):
    """A local tokenizer: a folder (``save_pretrained`` layout) or a ``tokenizer.json`` file.

    Never touches a hub. A tokenizer without PAD gets PAD = EOS (GPT-2's has no PAD)."""
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    path = Path(path)
    if path.is_dir():
        tok = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    elif path.is_file() and path.suffix == ".json":
        tok = PreTrainedTokenizerFast(tokenizer_file=str(path))
    else:
        raise ConfigError(f"tokenizer path {path} is neither a tokenizer folder nor a tokenizer.json")
    if tok.eos_token is None:
        if EOS not in tok.get_vocab():
            raise ConfigError(f"tokenizer {path} has no EOS token (expected {EOS!r})")
        tok.eos_token = EOS
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16) if vocab_size <= 1 << 16 else np.dtype(np.uint32)


def _encode(backend, texts: list[str]):
    """ids (flat), per-text lengths, and per-token end offsets (flat), via the Rust batch encoder."""
    encs = backend.encode_batch(texts, add_special_tokens=False)
    lengths = np.fromiter((len(e.ids) for e in encs), dtype=np.int64, count=len(encs))
    ids = np.fromiter((i for e in encs for i in e.ids), dtype=np.int64, count=int(lengths.sum()))
    ends = np.fromiter((o[1] for e in encs for o in e.offsets), dtype=np.int64, count=int(lengths.sum()))
    return ids, lengths, ends


# GPT-2's pre-tokenizer split, as the ByteLevel pre-tokenizer applies it before BPE.
GPT2_SPLIT = regex.compile(r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+""")


def word_cache_applies(backend) -> bool:
    """True for a plain byte-level BPE (ours, GPT-2's): BPE then works word by word."""
    spec = json.loads(backend.to_str())
    pre = spec.get("pre_tokenizer") or {}
    return (
        spec.get("normalizer") is None
        and spec["model"]["type"] == "BPE"
        and pre.get("type") == "ByteLevel"
        and pre.get("use_regex", True)
        and not pre.get("add_prefix_space", False)
    )


class WordCacheEncoder:
    """The Rust encoder's output, faster: a biography corpus has a few thousand distinct words, so
    each word is BPE-encoded once and cached; a text is then the concatenation of its words'
    tokens (measured: ~3x faster than ``encode_batch`` on 500k bios, 2 cores; tests check equality)."""

    def __init__(self, backend):
        self.backend, self.cache = backend, {}

    def __call__(self, texts: list[str]):
        ids: list[int] = []
        ends_in_word: list[int] = []
        word_start: list[int] = []
        word_tokens: list[int] = []
        lengths = np.empty(len(texts), dtype=np.int64)
        cache, encode = self.cache, self.backend.encode
        for t, text in enumerate(texts):
            before, pos = len(ids), 0
            for w in GPT2_SPLIT.findall(text):
                hit = cache.get(w)
                if hit is None:
                    e = encode(w, add_special_tokens=False)
                    hit = cache[w] = (e.ids, [o[1] for o in e.offsets])
                ids += hit[0]
                ends_in_word += hit[1]
                word_start.append(pos)
                word_tokens.append(len(hit[0]))
                pos += len(w)
            lengths[t] = len(ids) - before
        ends = np.asarray(ends_in_word, dtype=np.int64) + np.repeat(word_start, word_tokens)
        return np.asarray(ids, dtype=np.int64), lengths, ends


_WORKER_ENCODER = None


def _encode_in_worker(texts: list[str]):
    return _WORKER_ENCODER(texts)


def encode_batches(tokenizer, texts: list[str], batch: int = BATCH, workers: int = 2, fast: bool = True):
    """Yield ``(ids, lengths, ends)`` per batch of ``texts``, in order.

    ``ends`` (token end offsets) may differ between the two encoders for a token that is only a
    space (trimmed differently in context); the character-to-token mapping does not."""
    global _WORKER_ENCODER
    backend = tokenizer.backend_tokenizer
    specials = [t for t in tokenizer.all_special_tokens if t]
    fast = fast and word_cache_applies(backend) and not any(sp in t for t in texts for sp in specials)
    chunks = [texts[s : s + batch] for s in range(0, len(texts), batch)]
    if not fast:
        yield from (_encode(backend, c) for c in chunks)
        return
    _WORKER_ENCODER = WordCacheEncoder(backend)
    if workers <= 1 or len(chunks) < 4:
        yield from map(_WORKER_ENCODER, chunks)
        return
    with mp.get_context("fork").Pool(workers) as pool:  # the encoder reaches workers by fork
        yield from pool.imap(_encode_in_worker, chunks)


def char_to_token(ends: np.ndarray, chars: np.ndarray) -> np.ndarray:
    """Index of the token holding character ``chars[j]`` (first token whose end > char)."""
    return np.searchsorted(ends, chars, side="right")


def tokenize_texts(
    tokenizer, texts: list[str], spans: np.ndarray | None = None, desc: str = "tokenize", fast: bool = True
):
    """Tokenize ``texts``; map character spans ``(n, k, 2)`` to token spans ``(n, k, 2)``."""
    all_ids, all_lengths, all_tok = [], [], []
    bar = tqdm(total=len(texts), desc=desc, unit="text", disable=len(texts) < 4 * BATCH)
    for s, (ids, lengths, ends) in zip(
        range(0, len(texts), BATCH), encode_batches(tokenizer, texts, fast=fast), strict=True
    ):
        bar.update(len(lengths))
        all_ids.append(ids)
        all_lengths.append(lengths)
        if spans is not None:
            # One global search: shift each text's offsets by the total length of the texts before
            # it, so the end offsets of the whole batch are sorted.
            n_chars = np.fromiter((len(t) for t in texts[s : s + BATCH]), dtype=np.int64)
            char_base = np.concatenate([[0], np.cumsum(n_chars + 1)[:-1]])
            tok_base = np.concatenate([[0], np.cumsum(lengths)[:-1]])
            ends = ends + np.repeat(char_base, lengths)
            sp = spans[s : s + BATCH] + char_base[:, None, None]
            first = char_to_token(ends, sp[..., 0]) - tok_base[:, None]
            # a value's first token holds its first char; its end token is the one after its last
            last = char_to_token(ends, sp[..., 1] - 1) - tok_base[:, None] + 1
            all_tok.append(np.stack([first, last], -1).astype(np.int32))
    bar.close()
    ids = np.concatenate(all_ids) if all_ids else np.empty(0, np.int64)
    lengths = np.concatenate(all_lengths) if all_lengths else np.empty(0, np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    return ids, offsets, (np.concatenate(all_tok) if spans is not None else None)


def tokenize_dataset(
    data_dir: str | Path,
    out: str | Path,
    tokenizer=None,
    vocab_size: int = 2048,
    overwrite: bool = False,
    timings: dict | None = None,
    asked: dict | None = None,
    junk_dir: str | Path | None = None,
    domain_token: bool = False,
) -> dict:
    """Train (or take) a tokenizer and write the tokenized corpus folder; return its meta.

    ``timings``, if given, receives the seconds of each phase (for benchmarks); ``asked``, the
    tokenizer settings the corpus was made for, is recorded in its meta (``tokenizer_config``).
    ``junk_dir``: a dataset whose bios become the corpus's junk texts (Part 3.3 Results 10-11), with
    the same tokenizer; ``domain_token``: every bio of ``data_dir`` starts with DOMAIN (Result 12)."""
    timings = {} if timings is None else timings
    clock = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal clock
        timings[name] = round(time.perf_counter() - clock, 2)
        clock = time.perf_counter()

    data_dir = Path(data_dir)
    data_meta = read_meta(data_dir)
    with atomic_dir(out, overwrite) as tmp:
        bios = list(iter_jsonl(data_dir / "bios.jsonl"))
        people = {p["id"]: p for p in iter_jsonl(data_dir / "people.jsonl")}
        qas = list(iter_jsonl(data_dir / "qa.jsonl"))
        qa_texts = [format_qa(q["question"], q["answer"]) for q in qas]
        lap("read")
        if tokenizer is None:
            tokenizer = train_tokenizer([b["text"] for b in bios] + qa_texts, vocab_size)
            lap("train_tokenizer")
        if domain_token:
            tokenizer.add_special_tokens({"additional_special_tokens": [DOMAIN]})
        tokenizer.save_pretrained(str(tmp / "tokenizer"))
        vocab = len(tokenizer)
        dtype = token_dtype(vocab)

        attrs = data_meta.get("attributes", ATTRIBUTES)  # bioD names its own K
        spans = np.array(
            [[b["spans"][a] for a in attrs] + [b["spans"]["name"][0]] for b in bios], dtype=np.int64
        ).reshape(len(bios), len(attrs) + 1, 2)
        ids, offsets, tok = tokenize_texts(tokenizer, [b["text"] for b in bios], spans, "tokenize bios")
        domain_id = tokenizer.convert_tokens_to_ids(DOMAIN) if domain_token else None
        if domain_id is not None:
            ids, offsets, tok = prefix_texts(ids, offsets, tok, domain_id)
        ids.astype(dtype).tofile(tmp / "bios.bin")
        lap("tokenize_bios")
        split = np.array([people[b["person_id"]]["split"] == "train" for b in bios], dtype=np.int8)
        np.savez(
            tmp / "bios.npz",
            offsets=offsets,
            person_id=np.array([b["person_id"] for b in bios], dtype=np.int32),
            entry=np.array([b["entry"] for b in bios], dtype=np.int32),
            split=split,
            attr=tok[:, : len(attrs)],
            name=tok[:, len(attrs)],
        )

        # The answer starts right after the prompt: its first token index is the prompt's length
        # when tokenized together, found by mapping the answer's first character.
        answer_char = np.array([len(format_prompt(q["question"])) + 1 for q in qas], dtype=np.int64)
        q_spans = np.stack([answer_char, answer_char + 1], -1)[:, None, :]
        q_ids, q_offsets, q_tok = tokenize_texts(tokenizer, qa_texts, q_spans, "tokenize qa")
        q_ids.astype(dtype).tofile(tmp / "qa.bin")
        lap("tokenize_qa")
        np.savez(
            tmp / "qa.npz",
            offsets=q_offsets,
            person_id=np.array([q["person_id"] for q in qas], dtype=np.int32),
            attribute=np.array([attrs.index(q["attribute"]) for q in qas], dtype=np.int8),
            split=np.array([q["split"] == "train" for q in qas], dtype=np.int8),
            answer=q_tok[:, 0, 0],
        )
        lengths = np.diff(offsets)
        meta = {
            "format_version": 1,
            "data_dir": str(data_dir.resolve()),
            "data_sha256": data_meta["sha256"],
            **({"tokenizer_config": asked} if asked is not None else {}),
            "vocab_size": vocab,
            "dtype": dtype.name,
            "eos_token_id": tokenizer.eos_token_id,
            "pad_token_id": tokenizer.pad_token_id,
            **({"domain_token_id": domain_id} if domain_id is not None else {}),
            "counts": {
                "bios": len(bios),
                "bio_tokens": int(lengths.sum()),
                "qa": len(qas),
                "qa_tokens": int(len(q_ids)),
            },  # fmt: skip
            "tokens_per_bio": {
                "mean": round(float(lengths.mean()), 2),
                "min": int(lengths.min()),
                "max": int(lengths.max()),
            },
        }
        if junk_dir is not None:
            meta["junk"] = tokenize_junk(tokenizer, junk_dir, tmp, data_meta)
            lap("tokenize_junk")
        write_json(tmp / "meta.json", meta)
    return meta


def prefix_texts(ids: np.ndarray, offsets: np.ndarray, tok: np.ndarray, token_id: int):
    """``token_id`` put before every text of (ids, offsets); the texts' token spans ``tok`` move by one."""
    lengths = np.diff(offsets)
    starts = offsets[:-1] + np.arange(len(lengths))  # each text's new start, after the prefixes before it
    out = np.empty(len(ids) + len(lengths), dtype=ids.dtype)
    out[starts] = token_id
    keep = np.ones(len(out), dtype=bool)
    keep[starts] = False
    out[keep] = ids
    return out, np.concatenate([[0], np.cumsum(lengths + 1)]), tok + 1


def tokenize_junk(tokenizer, junk_dir: str | Path, out: Path, data_meta: dict) -> dict:
    """The bios of dataset ``junk_dir`` as the corpus's JUNK texts (a TextSet, every row trainable):
    people who are never measured, whose bios fill ``train.junk_fraction`` of the windows."""
    junk_meta = read_meta(junk_dir)
    if junk_meta["sha256"] == data_meta["sha256"]:
        raise ConfigError("the junk bios are the dataset's own: junk needs other people (another seed)")
    texts = [b["text"] for b in iter_jsonl(Path(junk_dir) / "bios.jsonl")]
    meta = write_texts(tokenizer, texts, [0] * len(texts), out, JUNK, split=np.ones(len(texts), np.int8))
    return {"data_sha256": junk_meta["sha256"], "bios": meta["texts"], "tokens": meta["tokens"]}


class TextSet:
    """Tokenized training texts, one per row: ``ids[offsets[i]:offsets[i+1]]``, with per-row arrays
    ``split`` (1 = P_train) and ``answer`` (index of the first token the finetuning loss covers).
    The corpus's QA (``Corpus.qa_set``) and a Part 3.2 task set's items (``NAME.bin`` /
    ``NAME.npz`` / ``NAME.json``, ``write_texts``) are both one, so QA finetuning and mixed training
    read either through the same code."""

    REQUIRED = ("offsets", "split", "answer")

    def __init__(self, ids: np.ndarray, arrays: dict, eos: int, pad: int):
        missing = [k for k in self.REQUIRED if k not in arrays]
        if missing:
            raise DataFileError(f"tokenized texts lack the arrays {missing}")
        self.ids, self.arrays, self.eos, self.pad = ids, arrays, int(eos), int(pad)

    @classmethod
    def load(cls, directory: str | Path, name: str = "items") -> TextSet:
        directory = Path(directory)
        path = directory / f"{name}.json"
        if not path.is_file():
            raise DataFileError(f"{directory}: no tokenized texts {name} ({path.name} missing)")
        meta = json.loads(path.read_text())
        ids = np.memmap(directory / f"{name}.bin", dtype=np.dtype(meta["dtype"]), mode="r")
        return cls(ids, dict(np.load(directory / f"{name}.npz")), meta["eos_token_id"], meta["pad_token_id"])

    def __len__(self) -> int:
        return len(self.arrays["split"])

    @property
    def offsets(self) -> np.ndarray:
        return self.arrays["offsets"]

    def train_rows(self) -> np.ndarray:
        return np.flatnonzero(self.arrays["split"] == 1)

    def text(self, i: int) -> np.ndarray:
        o = self.offsets
        return np.asarray(self.ids[o[i] : o[i + 1]])


def write_texts(tokenizer, texts: list[str], answer_chars: list[int], out: str | Path, name: str,
                **arrays: np.ndarray) -> dict:  # fmt: skip
    """Tokenize ``texts`` into ``out/NAME.bin`` + ``NAME.npz`` (offsets, answer: the token holding
    character ``answer_chars[i]``, and ``arrays``, which must include ``split``) + ``NAME.json``
    (dtype, special ids), the layout ``TextSet.load`` reads. Returns the JSON meta."""
    if not texts:
        raise ConfigError(f"no texts to tokenize into {name}")
    out = Path(out)
    chars = np.asarray(answer_chars, dtype=np.int64)
    ids, offsets, tok = tokenize_texts(tokenizer, texts, np.stack([chars, chars + 1], -1)[:, None, :], name)
    dtype = token_dtype(len(tokenizer))
    ids.astype(dtype).tofile(out / f"{name}.bin")
    np.savez(out / f"{name}.npz", offsets=offsets, answer=tok[:, 0, 0], **arrays)
    meta = {"format_version": 1, "dtype": dtype.name, "vocab_size": len(tokenizer),
            "eos_token_id": tokenizer.eos_token_id, "pad_token_id": tokenizer.pad_token_id,
            "texts": len(texts), "tokens": int(len(ids))}  # fmt: skip
    write_json(out / f"{name}.json", meta)
    return meta


def pad_right(seqs: list[np.ndarray], pad: int) -> tuple[np.ndarray, np.ndarray]:
    """[batch, max_len] ids and attention mask; right padding keeps positions of a causal model."""
    width = max(len(s) for s in seqs)
    ids = np.full((len(seqs), width), pad, dtype=np.int64)
    mask = np.zeros((len(seqs), width), dtype=np.int64)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = s
        mask[i, : len(s)] = 1
    return ids, mask


class Corpus:
    """A tokenized corpus folder, memory-mapped."""

    def __init__(self, directory: str | Path):
        self.dir = Path(directory)
        path = self.dir / "meta.json"
        if not path.is_file():
            raise DataFileError(f"{self.dir}: not a tokenized corpus (no meta.json)")
        self.meta = json.loads(path.read_text())
        dtype = np.dtype(self.meta["dtype"])
        self.bio_ids = np.memmap(self.dir / "bios.bin", dtype=dtype, mode="r")
        self.qa_ids = np.memmap(self.dir / "qa.bin", dtype=dtype, mode="r")
        self.bios = dict(np.load(self.dir / "bios.npz"))
        self.qa = dict(np.load(self.dir / "qa.npz"))
        self.eos = int(self.meta["eos_token_id"])
        self.pad = int(self.meta["pad_token_id"])
        self.vocab_size = int(self.meta["vocab_size"])

    @property
    def n_bios(self) -> int:
        return len(self.bios["person_id"])

    def bio(self, i: int) -> np.ndarray:
        o = self.bios["offsets"]
        return np.asarray(self.bio_ids[o[i] : o[i + 1]])

    def qa_text(self, i: int) -> np.ndarray:
        o = self.qa["offsets"]
        return np.asarray(self.qa_ids[o[i] : o[i + 1]])

    def qa_set(self) -> TextSet:
        """The QA texts as a ``TextSet`` (what QA finetuning and mixed training read)."""
        return TextSet(self.qa_ids, self.qa, self.eos, self.pad)

    def junk_set(self) -> TextSet | None:
        """The junk bios (Part 3.3 Results 10-11), None for a corpus made without them."""
        return TextSet.load(self.dir, JUNK) if "junk" in self.meta else None

    @property
    def domain_token_id(self) -> int | None:
        """The DOMAIN token every bio starts with (Part 3.3 Result 12), None without one."""
        return self.meta.get("domain_token_id")

    def tokenizer(self):
        return load_tokenizer(self.dir / "tokenizer")


def prepare_corpus(
    run_dir: str | Path,
    data_cfg=None,
    data_dir: str | Path | None = None,
    tokenizer_path: str | Path | None = None,
    vocab_size: int = 2048,
) -> Path:
    """``run_dir/corpus`` for a dataset: an existing ``data_dir``, or ``data_cfg`` generated into
    ``run_dir/data``. Both are reused when present and made from the same inputs."""
    run_dir = Path(run_dir)
    if tokenizer_path is None:  # before the dataset is written: a bad size leaves nothing behind
        check_vocab_size(vocab_size)
    if data_dir is None:
        data_dir = run_dir / "data"
        if (data_dir / "meta.json").is_file():
            if read_meta(data_dir)["config"] != data_cfg.to_dict():
                raise ConfigError(f"{data_dir} holds a different dataset than data=...; use a new out")
        else:
            write_dataset(data_cfg, data_dir, overwrite=True)
    data_meta = read_meta(data_dir)  # a clear error if data_dir is not a dataset
    corpus_dir = run_dir / "corpus"
    asked = {"path": str(Path(tokenizer_path).resolve()) if tokenizer_path else None,
             "vocab_size": None if tokenizer_path else vocab_size}  # fmt: skip
    if (corpus_dir / "meta.json").is_file():
        meta = Corpus(corpus_dir).meta
        if meta["data_sha256"] != data_meta["sha256"]:
            raise ConfigError(f"{corpus_dir} was tokenized from another dataset; use a new out")
        made = meta.get("tokenizer_config", asked)  # a corpus from before the record: trusted
        changed = [f"tokenizer.{k}={made.get(k)} (now {v})" for k, v in asked.items() if made.get(k) != v]
        if changed:
            raise ConfigError(f"{corpus_dir} was tokenized with {', '.join(changed)}; use a new out")
        return corpus_dir
    tokenizer = load_tokenizer(tokenizer_path) if tokenizer_path else None
    tokenize_dataset(data_dir, corpus_dir, tokenizer, vocab_size, overwrite=True, asked=asked)
    return corpus_dir
