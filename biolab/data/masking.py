"""Masked-LM data for the paper's GBERT (P3.1 section 7, App. H): the mask token, whole-word
masking of token windows and the QA format with masks.

Whole-word masking: each word is selected with probability 15%; a selected word becomes mask tokens
80% of the time, random tokens 10%, and stays unchanged 10%; the loss covers every token of a
selected word. transformers' ``DataCollatorForLanguageModeling(whole_word_mask=True)`` finds words
from a fast tokenizer's character offsets and then masks every selected token (it turns the 10%/10%
off), and our training windows are packed token ids without offsets, so the word boundaries come
from the vocabulary here: a token starts a word when its byte-level text starts with a space, or is
not a letter or digit continuing the previous token ("1996" may be "199" + "6"; ", MA" is "," + " MA").

QA for a masked LM: ``[EOS] question Answer:`` followed by as many mask tokens as the answer has
tokens; finetuning trains on exactly that (labels at the masks), and evaluation counts an answer
correct only if every mask is recovered (``biolab.eval.fill``); ``biolab.train.mlm`` feeds both to
the training loop.
"""

from __future__ import annotations

import numpy as np

from biolab.data.tokens import TextSet

MASK_TOKEN = "<|mask|>"
MLM_PROBABILITY = 0.15
MASK_SHARE, RANDOM_SHARE = 0.8, 0.1  # of the selected words; the rest stay unchanged


def with_mask_token(tokenizer):
    """``tokenizer`` with a mask token (added after the vocabulary, so the corpus's ids are unchanged)."""
    if tokenizer.mask_token is None:
        tokenizer.add_special_tokens({"mask_token": MASK_TOKEN})
    return tokenizer


def word_start_table(tokenizer) -> np.ndarray:  # [vocab] bool
    """Whether each token id starts a new word; special tokens count as words of their own (and are
    never selected, see ``mask_words``)."""
    tokens = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    specials = set(tokenizer.all_special_ids)
    table = np.zeros(len(tokens), dtype=bool)
    for i, t in enumerate(tokens):
        # byte-level BPE writes a leading space as "Ġ"
        table[i] = i in specials or not t or t[0] == "Ġ" or not t[0].isalnum()
    return table


def special_table(tokenizer) -> np.ndarray:  # [vocab] bool
    table = np.zeros(len(tokenizer), dtype=bool)
    table[list(tokenizer.all_special_ids)] = True
    return table


def mask_words(
    ids: np.ndarray,  # [batch, seq] token ids
    starts: np.ndarray,  # [vocab] bool, word_start_table
    special: np.ndarray,  # [vocab] bool, never selected
    mask_id: int,
    rng: np.random.Generator,
    probability: float = MLM_PROBABILITY,
) -> tuple[np.ndarray, np.ndarray]:  # (input_ids, labels) [batch, seq]; labels -100 where unselected
    """Whole-word masking of a batch. Every row gets at least one selected word (a row with none
    would make a micro-batch's loss 0/0)."""
    ids = np.asarray(ids, dtype=np.int64)
    is_special = special[ids]
    after_special = np.zeros_like(is_special)
    after_special[:, 1:] = is_special[:, :-1]
    word = np.cumsum(starts[ids] | is_special | after_special, axis=1)  # [batch, seq] word of each token
    n_words = int(word.max()) + 1
    chosen = rng.random((len(ids), n_words)) < probability
    eligible = np.zeros((len(ids), n_words + 1), dtype=bool)  # words holding a real token (+1: a bin)
    np.put_along_axis(eligible, np.where(is_special, n_words, word), True, axis=1)
    eligible = eligible[:, :n_words]
    chosen &= eligible
    for r in np.flatnonzero(~chosen.any(axis=1)):
        candidates = np.flatnonzero(eligible[r])
        if len(candidates):
            chosen[r, rng.choice(candidates)] = True
    action = rng.random((len(ids), n_words))  # per word: mask / random / keep
    selected = np.take_along_axis(chosen, word, axis=1) & ~is_special
    act = np.take_along_axis(action, word, axis=1)
    labels = np.where(selected, ids, -100)
    out = ids.copy()
    out[selected & (act < MASK_SHARE)] = mask_id
    to_random = selected & (act >= MASK_SHARE) & (act < MASK_SHARE + RANDOM_SHARE)
    ordinary = np.flatnonzero(~special)
    out[to_random] = rng.choice(ordinary, size=int(to_random.sum()))
    return out, labels


def masked_qa(
    prompt: np.ndarray, answer: np.ndarray, eos: int, mask_id: int
) -> tuple[np.ndarray, np.ndarray]:
    """``[EOS] prompt`` + one mask per answer token: (input ids, labels with the answer at the masks)."""
    ids = np.concatenate([[eos], prompt, np.full(len(answer), mask_id)]).astype(np.int64)
    labels = np.full(len(ids), -100, dtype=np.int64)
    labels[len(ids) - len(answer) :] = answer
    return ids, labels


def drop_period(answer: np.ndarray, period: int) -> np.ndarray:
    """The answer tokens a masked LM fills in: a final "." is the sentence's (or, for "Dow Inc.", the
    value's own, which exact match ignores too), so it is left out."""
    return answer[:-1] if len(answer) > 1 and answer[-1] == period else answer


def answer_ids(tokenizer, answer: str) -> np.ndarray:
    """The tokens of `` {answer}`` as they follow "Answer:" in a QA text, without a final period."""
    ids = np.asarray(tokenizer(" " + answer, add_special_tokens=False)["input_ids"], dtype=np.int64)
    return drop_period(ids, tokenizer.convert_tokens_to_ids("."))


def qa_parts(texts: TextSet, row: int, period: int, space: int | None) -> tuple[np.ndarray, np.ndarray]:
    """(prompt tokens, answer tokens) of one tokenized QA text ``question Answer: value.``, split
    where ``answer_ids`` splits them: the answer starts with `` value``'s first token, a lone space
    token (id ``space``: a small vocabulary may not merge the space into the word) included."""
    tokens = texts.text(row)
    first = int(texts.arrays["answer"][row])
    if space is not None and first > 0 and tokens[first - 1] == space:
        first -= 1
    return tokens[:first], drop_period(tokens[first:], period)


def split_ids(tokenizer) -> tuple[int, int | None]:
    """(the period's id, the lone space's id or None): what ``qa_parts`` needs of the tokenizer."""
    space = tokenizer.convert_tokens_to_ids("Ġ")
    return tokenizer.convert_tokens_to_ids("."), (space if space != tokenizer.unk_token_id else None)
