"""Bits of knowledge a model stores (Part 3.3 Definition 4.3), from its loss on the bios.

For every person, one bio (entry 0) is read after an EOS, as in training. Remark 3.1: the loss
summed over the tokens of the name's first mention is what the model pays for the name (later
mentions cost nothing once it is known), p1 is its mean over people; p2 is the loss summed over
every attribute value's tokens (and, in bioS, the first pronoun: the gender), averaged over people.
All losses are natural-log cross-entropies. Then, for bioS(N),

    bits  = N log2(N0 / e^p1) + N log2(S0 / e^p2)          R = bits / P
    R_max = (N log2(N0 / N) + N log2 S0) / P

with N0 and S0 the dataset's own name and value spaces (``meta.json`` ``bits_per_person``), and P
the parameters without the embedding rows of tokens that never occur in the data. The names are
counted as a sequence of N draws, as Definition 4.3 writes it (not as a set, which would subtract
log2 N!). For bioD (Theorem 3.2) the name space is N0 - N, the values are K C log2 D bits per
person, and the diversity term adds K D log2((T^L - D) / (D e^{p2 / (K C)})), the bits of the K
chunk vocabularies. A term below zero (a model worse than uniform on that part) counts as zero,
and p1 counts as at least ln N (no model does better on N distinct names), so bits never exceed
the dataset's knowledge.

bioS differs from the paper's count in two places, both in ``bits_per_person``: our pronoun is one
of three (log2 3 bits, the paper's gender one of two), and the loss on the company's city is
counted with the values: it is a function of the company, so it costs nothing after the company,
but in a permuted bio it can come first and then carries the company's information.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field

import numpy as np
import regex
import torch
from tqdm.auto import tqdm

from biolab.config import from_dict
from biolab.data.biod import BioDConfig
from biolab.data.dataset import BIOD, iter_jsonl, read_meta
from biolab.data.tokens import pad_right, tokenize_texts
from biolab.errors import ConfigError
from biolab.eval.quantize import BITS, quantize_model_
from biolab.model import count_parameters

LN2 = math.log(2)
PRONOUN = regex.compile(
    r"\b(?:he|she|they|his|her|hers|their|theirs|him|them|himself|herself|themselves)\b", regex.IGNORECASE
)


def first_bios(data_dir, max_people: int | None = None) -> tuple[list[str], np.ndarray, np.ndarray, list]:
    """(texts, char spans (n, k, 2), which spans exist (n, k), span names) of each person's entry-0
    bio: the name's first mention, every attribute, and in bioS the first pronoun after the name."""
    meta = read_meta(data_dir)
    attrs = list(meta["attributes"])
    gendered = meta["config"].get("style") != BIOD
    names = ["name", *attrs, *(["pronoun"] if gendered else [])]
    texts, spans, present = [], [], []
    for bio in iter_jsonl(f"{data_dir}/bios.jsonl"):
        if bio["entry"] != 0:
            continue
        name = bio["spans"]["name"][0]
        row = [name, *(bio["spans"][a] for a in attrs)]
        ok = [True] * len(row)
        if gendered:
            m = PRONOUN.search(bio["text"], name[1])
            row.append([m.start(), m.end()] if m else [0, 1])
            ok.append(m is not None)  # a bio with no pronoun states no gender (fullname bios)
        texts.append(bio["text"])
        spans.append(row)
        present.append(ok)
        if max_people is not None and len(texts) == max_people:
            break
    return texts, np.array(spans, dtype=np.int64), np.array(present, dtype=bool), names


@torch.no_grad()
def span_losses(
    model,
    tokenizer,
    texts: list[str],
    spans: np.ndarray,
    batch_size: int = 64,
    progress: bool = False,
    prefix: tuple[int, ...] = (),
) -> np.ndarray:  # [n, k] summed cross-entropy (nats) over each span's tokens
    """The model's loss summed over the tokens of each character span, each text read after EOS and
    ``prefix`` (the domain token the model saw before every bio in training, Part 3.3 Result 12)."""
    ids, offsets, tok = tokenize_texts(tokenizer, texts, spans, "tokenize")
    tok = tok + len(prefix)
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    seqs = [np.concatenate([[eos, *prefix], ids[offsets[i] : offsets[i + 1]]]) for i in range(len(texts))]
    device = next(model.parameters()).device
    out = np.zeros(spans.shape[:2], dtype=np.float64)
    model.eval()
    for s in tqdm(range(0, len(seqs), batch_size), desc="capacity loss", disable=not progress):
        batch, mask = pad_right(seqs[s : s + batch_size], pad)
        x = torch.from_numpy(batch).to(device)
        logits = model(input_ids=x, attention_mask=torch.from_numpy(mask).to(device)).logits.float()
        # token j of the text is input position j + 1, predicted from position j
        nll = -torch.log_softmax(logits[:, :-1], -1).gather(-1, x[:, 1:, None])[..., 0]
        cum = torch.nn.functional.pad(nll.cumsum(1), (1, 0)).double().cpu().numpy()  # cum[:, j]: tokens < j
        t = tok[s : s + batch_size].astype(np.int64)
        rows = np.arange(len(t))[:, None]
        out[s : s + len(t)] = cum[rows, t[..., 1]] - cum[rows, t[..., 0]]
    return out


def used_parameters(model, used_ids: np.ndarray) -> int:
    """Parameters without the embedding rows of tokens the data never holds (P of Part 3.3: GPT2-small
    counts as 88M on bioS, not 124M). Tied input and output embeddings are counted once."""
    total = count_parameters(model)
    unused = model.config.vocab_size - len(np.unique(used_ids))
    tables = {id(m.weight): m.weight for m in (model.get_input_embeddings(), model.get_output_embeddings())
              if m is not None}  # fmt: skip
    return total - sum(unused * w.shape[1] for w in tables.values())


def knowledge(meta: dict) -> dict:
    """The dataset's N and the constants of its bits formula."""
    n = int(meta["counts"]["people"])
    per = meta["bits_per_person"]
    out = {"style": meta["config"].get("style", "bioS"), "N": n, "log2_N0": per["name"] + math.log2(n),
           "log2_S0": per["attributes"]}  # fmt: skip
    if out["style"] == BIOD:
        b = BioDConfig.from_dict(meta["config"]["biod"])
        out.update(K=b.K, C=b.C, D=b.D, L=b.L, T=b.T)
        out["log2_N0"] = math.log2(2 ** out["log2_N0"] + n)  # bits_per_person holds log2((N0 - N) / N)
    return out


def bits(k: dict, p1: float, p2: float, P: int) -> dict:
    """name, value (and bioD diversity) bits, their sum, R = bits / P and R_max, from the losses."""
    n = k["N"]
    space, diversity, vocab = k["log2_N0"], 0.0, 0.0
    if k["style"] == BIOD:
        space = math.log2(2**space - n)
        # the bits of the K chunk vocabularies at zero loss, less what the loss per chunk leaves open
        vocab = max(0.0, k["K"] * k["D"] * math.log2(max(k["T"] ** k["L"] - k["D"], 1) / k["D"]))
        diversity = vocab - k["K"] * k["D"] * p2 / (k["K"] * k["C"]) / LN2
    upper = n * (space - math.log2(n)) + n * k["log2_S0"] + vocab
    # Gibbs: over N distinct names no distribution's mean loss is below ln N; a lower p1 (an oracle, or
    # names that are token prefixes of others) would count more name bits than the data holds.
    name = max(0.0, n * (space - max(p1, math.log(n)) / LN2))
    value = max(0.0, n * (k["log2_S0"] - p2 / LN2))
    diversity = max(0.0, diversity)
    total = name + value + diversity
    return {"name_bits": name, "value_bits": value, "diversity_bits": diversity, "bits": total,
            "R": total / P, "R_max": upper / P}  # fmt: skip


def measure(model, tokenizer, data_dir, used_ids: np.ndarray, max_people: int | None = None,
            batch_size: int = 64, progress: bool = False, bios: tuple | None = None,
            prefix: tuple[int, ...] = ()) -> dict:  # fmt: skip
    """p1, p2 (and p2 by attribute), P and the bits of ``model`` on the dataset in ``data_dir``;
    ``bios``: what ``first_bios(data_dir, max_people)`` returns, when the caller read it already;
    ``prefix``: token ids each bio follows (``span_losses``)."""
    meta = read_meta(data_dir)
    texts, spans, present, names = bios or first_bios(data_dir, max_people)
    losses = span_losses(model, tokenizer, texts, spans, batch_size, progress, prefix)
    losses = np.where(present, losses, 0.0)
    p1 = float(losses[:, 0].mean())
    p2 = float(losses[:, 1:].sum(1).mean())
    k = knowledge(meta)
    P = used_parameters(model, used_ids)
    by_attr = {n: round(float(v), 5) for n, v in zip(names[1:], losses[:, 1:].mean(0), strict=True)}
    return {**k, "people_read": len(texts), "P": P, "p1": p1, "p2": p2, "p2_by_attribute": by_attr,
            **bits(k, p1, p2, P)}  # fmt: skip


@dataclass(frozen=True)
class CapacityConfig:
    """The ``capacity`` section: bits of each pretrained model, also after int8 / int4 rounding."""

    enabled: bool = False
    max_people: int | None = None  # people read (None: all; the bits formula keeps the dataset's N)
    batch_size: int = 64
    quantize: list = field(default_factory=lambda: list(BITS))  # bits per weight, [] for none
    group_size: int = 32  # inputs sharing one scale (biolab.eval.quantize)

    @classmethod
    def from_dict(cls, d: dict) -> CapacityConfig:
        return from_dict(cls, d, "capacity")

    def validate(self) -> None:
        if self.max_people is not None and self.max_people < 1:
            raise ConfigError(f"capacity.max_people must be null or >= 1, got {self.max_people}")
        if self.batch_size < 1 or self.group_size < 1:
            raise ConfigError("capacity.batch_size and capacity.group_size must be >= 1")
        if not isinstance(self.quantize, list) or any(not isinstance(b, int) or not 2 <= b <= 16
                                                      for b in self.quantize):  # fmt: skip
            raise ConfigError(
                f"capacity.quantize must be a list of bit widths in [2, 16], got {self.quantize!r}"
            )


def measure_with_quantized(model, tokenizer, data_dir, used_ids: np.ndarray, cfg: CapacityConfig,
                           progress: bool = False, prefix: tuple[int, ...] = ()) -> list[dict]:  # fmt: skip
    """The float model's row (``quant`` "fp32"), then one per ``cfg.quantize`` bit width."""
    # the bios are read once for every precision: bioS_cap holds 100 entries per person
    bios = first_bios(data_dir, cfg.max_people)
    common = dict(batch_size=cfg.batch_size, progress=progress, bios=bios, prefix=prefix)
    rows = [{"quant": "fp32", **measure(model, tokenizer, data_dir, used_ids, **common)}]
    for b in cfg.quantize:
        q = copy.deepcopy(model)
        quantize_model_(q, b, cfg.group_size)
        rows.append({"quant": f"int{b}", **measure(q, tokenizer, data_dir, used_ids, **common)})
    return rows
