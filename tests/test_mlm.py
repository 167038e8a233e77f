"""GBERT: whole-word masking, masked-LM batches, QA by filling masks, LoRA and the refused combinations."""

import numpy as np
import pytest
import torch
from test_compat import planned_runs

from biolab.data.dataset import DataConfig
from biolab.data.masking import (
    MASK_SHARE,
    RANDOM_SHARE,
    answer_ids,
    mask_words,
    special_table,
    split_ids,
    with_mask_token,
    word_start_table,
)
from biolab.data.packing import MixedStream, WindowStream
from biolab.data.tokens import Corpus, prepare_corpus
from biolab.errors import ConfigError
from biolab.eval import qa as qa_eval
from biolab.eval.fill import fill_answers
from biolab.model import ModelConfig, build_model, is_masked_lm, load_model
from biolab.train.config import TrainConfig
from biolab.train.finetune import FinetuneConfig, QABatches, apply_lora, finetune
from biolab.train.mlm import MaskedStream
from biolab.train.pretrain import pretrain

SMALL = dict(arch="modernbert", n_layer=2, n_head=2, d_model=32, max_positions=64)
QUIET = dict(batch_size=4, warmup_steps=0, eval_every=0, ckpt_every=0, wandb="disabled")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("mlm")
    return Corpus(prepare_corpus(root, DataConfig(n_people=40), vocab_size=300))


@pytest.fixture(scope="module")
def tokenizer(corpus):
    return with_mask_token(corpus.tokenizer())


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory, corpus):
    root = tmp_path_factory.mktemp("gbert")
    cfg = TrainConfig(
        steps=6, batch_size=4, ctx=32, warmup_steps=1, eval_every=0, ckpt_every=0, wandb="disabled"
    )
    pretrain(root, corpus, ModelConfig(name="g", **SMALL), cfg, progress=False)
    return root / "model"


def words_of(ids, starts, special):
    """Word index of each token, recomputed the plain way (one token at a time)."""
    out, w, prev_special = [], 0, False
    for t in ids:
        if starts[t] or special[t] or prev_special:
            w += 1
        out.append(w)
        prev_special = special[t]
    return np.array(out)


def test_whole_words_are_masked_with_80_10_10(corpus, tokenizer):
    starts, special = word_start_table(tokenizer), special_table(tokenizer)
    windows = WindowStream(corpus.bio_ids, corpus.bios["offsets"], corpus.eos, 64, 0).next_windows(200)
    ids, labels = mask_words(windows, starts, special, tokenizer.mask_token_id, np.random.default_rng(0))
    assert ids.shape == labels.shape == windows.shape
    selected = labels != -100
    assert (labels[selected] == windows[selected]).all()
    assert not special[windows[selected]].any()  # EOS and PAD are never selected
    assert selected.any(axis=1).all()  # every row has something to learn from
    n_words = n_selected = 0
    actions = {"mask": 0, "random": 0, "kept": 0}
    for row in range(len(windows)):
        word = words_of(windows[row], starts, special)
        for w in np.unique(word):
            part = (word == w) & ~special[windows[row]]
            if not part.any():
                continue
            n_words += 1
            chosen = selected[row, part]
            assert chosen.all() or not chosen.any(), "a word is masked whole or not at all"
            if chosen.all():
                n_selected += 1
                got = ids[row, part]
                if (got == tokenizer.mask_token_id).all():
                    actions["mask"] += 1
                elif (got == windows[row, part]).all():
                    actions["kept"] += 1  # also a random draw equal to the token itself, rarely
                else:
                    actions["random"] += 1
    assert 0.13 < n_selected / n_words < 0.18
    assert abs(actions["mask"] / n_selected - MASK_SHARE) < 0.04
    assert abs(actions["random"] / n_selected - RANDOM_SHARE) < 0.04
    assert abs(actions["kept"] / n_selected - (1 - MASK_SHARE - RANDOM_SHARE)) < 0.04


def test_word_starts_follow_spaces_and_punctuation(tokenizer):
    starts = word_start_table(tokenizer)
    ids = tokenizer(" Princeton, NJ", add_special_tokens=False)["input_ids"]
    pieces = tokenizer.convert_ids_to_tokens(ids)
    assert starts[ids[0]] and pieces[0].startswith("Ġ")
    comma = pieces.index(",")
    assert starts[ids[comma]]  # "," is a word of its own
    for i, p in enumerate(pieces):
        if p[0] != "Ġ" and p[0].isalnum():  # byte-level BPE writes the space as "Ġ", itself a letter
            assert not starts[ids[i]]  # a letter right after a token continues its word


def test_masked_stream_is_deterministic_and_resumes(corpus, tokenizer):
    def stream():
        bio = WindowStream(corpus.bio_ids, corpus.bios["offsets"], corpus.eos, 32, 0)
        return MaskedStream(MixedStream(bio, None, 0.0, 0), tokenizer, seed=0)

    a, b = stream(), stream()
    first, same = a.next_batch(4), b.next_batch(4)
    assert all((first[k] == same[k]).all() for k in first)
    state = a.state_dict()
    after = a.next_batch(4)
    c = stream()
    c.load_state_dict(state)
    again = c.next_batch(4)
    assert (after["input_ids"] == again["input_ids"]).all() and (after["labels"] == again["labels"]).all()
    assert (after["input_ids"] == tokenizer.mask_token_id).any()


def test_gbert_attends_both_ways(tokenizer):
    torch.manual_seed(0)
    model = build_model(ModelConfig(**SMALL), len(tokenizer), tokenizer.eos_token_id, tokenizer.pad_token_id)
    assert is_masked_lm(model) and model.config.layer_types == ["full_attention"] * 2
    ids = torch.tensor([tokenizer("He was born in Boston.")["input_ids"]])
    later = ids.clone()
    later[0, -1] = tokenizer.mask_token_id
    with torch.no_grad():
        diff = (model(input_ids=ids).logits[0, 0] - model(input_ids=later).logits[0, 0]).abs().max()
    assert diff > 0  # the first position sees the last token: no causal mask


PROMPT = ["Where was Ann born? Answer:"]


class Recorder(torch.nn.Module):
    """A masked LM stand-in that fills the last len(gold) real positions with the gold tokens (the
    last one wrong with ``wrong``) and records its inputs."""

    def __init__(self, gold, wrong=False):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.gold, self.wrong, self.inputs, self.vocab = list(gold), wrong, [], 400

    def forward(self, input_ids, attention_mask):
        self.inputs.append((input_ids.clone(), attention_mask.clone()))
        logits = torch.zeros(*input_ids.shape, self.vocab)
        target = self.gold[:-1] + [(self.gold[-1] + 1) % self.vocab] if self.wrong else self.gold
        for row in range(len(input_ids)):
            n = int(attention_mask[row].sum())
            for j, t in enumerate(target):
                logits[row, n - len(target) + j, t] = 1.0
        return type("Out", (), {"logits": logits})()


def test_fill_answers_uses_masks_and_needs_every_one(tokenizer):
    answer = "Princeton, NJ"
    gold = answer_ids(tokenizer, answer)
    model = Recorder(gold)
    preds, first = fill_answers(model, tokenizer, PROMPT, [answer])
    ids, mask = model.inputs[0]
    n = int(mask[0].sum())
    assert (ids[0, n - len(gold) : n] == tokenizer.mask_token_id).all()  # one mask per answer token
    assert (
        ids[0, 0] == tokenizer.eos_token_id and not (ids[0, : n - len(gold)] == tokenizer.mask_token_id).any()
    )
    assert qa_eval.is_correct(preds[0], answer) and first[0]
    preds, first = fill_answers(
        Recorder(gold, wrong=True), tokenizer, ["Where was Ann born? Answer:"], [answer]
    )
    assert not qa_eval.is_correct(preds[0], answer) and first[0]  # the first token alone is not enough


def test_evaluate_qa_of_a_masked_lm_never_generates(pretrained, corpus, monkeypatch):
    model, tokenizer = load_model(pretrained)
    assert tokenizer.mask_token_id is not None and is_masked_lm(model)

    def no(*a, **k):
        raise AssertionError("a masked LM must not generate left to right")

    monkeypatch.setattr(qa_eval, "generate_answers", no)
    monkeypatch.setattr(qa_eval, "first_token_correct", no)
    data = corpus.meta["data_dir"]
    metrics = qa_eval.evaluate_qa(model, tokenizer, data, max_people=3, show_table=False, progress=False)
    assert set(metrics["splits"]) == {"train", "test"}
    with pytest.raises(ConfigError, match="num_beams"):
        qa_eval.evaluate_qa(model, tokenizer, data, max_people=3, num_beams=2, show_table=False)


def test_masked_qa_batches_end_in_one_mask_per_answer_token(corpus, tokenizer):
    mask_id = tokenizer.mask_token_id
    batch = QABatches(corpus, 0, masked=(mask_id, *split_ids(tokenizer))).next_batch(8)
    for ids, labels, attn in zip(batch["input_ids"], batch["labels"], batch["attention_mask"], strict=True):
        n = int(attn.sum())
        masked = labels != -100
        assert masked.any() and (ids[masked] == mask_id).all()
        assert np.flatnonzero(masked).max() == n - 1  # the masks close the example
        answer = tokenizer.decode(labels[masked].tolist())
        prompt = ids[1 : n - masked.sum()]
        assert tokenizer.decode(prompt.tolist()).endswith("Answer:") and not answer.endswith(".")
        # the form the evaluation builds: the prompt and answer_ids(answer), tokenized apart
        assert (
            prompt.tolist()
            == tokenizer(tokenizer.decode(prompt.tolist()), add_special_tokens=False)["input_ids"]
        )
        assert labels[masked].tolist() == answer_ids(tokenizer, answer.strip()).tolist()


def test_gbert_lora_adapts_q_and_v_of_wqkv_and_finetunes(pretrained, corpus, tmp_path):
    ft = FinetuneConfig(lora_r=2, embed_r=4)
    model = apply_lora(load_model(pretrained)[0].train(), ft)
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    assert names and all("lora_" in n for n in names)
    assert any("Wqkv" in n for n in names) and any("tok_embeddings" in n for n in names)
    cfg = TrainConfig(
        steps=3, batch_size=4, ctx=64, warmup_steps=0, eval_every=0, ckpt_every=0, wandb="disabled"
    )
    finetune(tmp_path / "ft", pretrained, corpus, ft, cfg, progress=False)
    tuned, tok = load_model(tmp_path / "ft" / "model")
    assert is_masked_lm(tuned) and tok.mask_token_id is not None


@pytest.mark.parametrize(
    "override, message",
    [
        ("probes=[p_fast]", "P-probes"),
        ("manipulation.tasks=[birth_to_first]", "manipulation"),
        ("memorization.enabled=true", "memorization"),
        ("eval.num_beams=4", "num_beams"),
    ],
)
def test_a_masked_lm_refuses_what_it_cannot_do_before_work(override, message):
    with pytest.raises(ConfigError, match=message):
        planned_runs(["experiment=fig9_bert", "datasets=[bioS_single]", override])


def test_lora_on_an_arch_without_targets_fails_at_planning(monkeypatch):
    from biolab.pipeline import plan

    monkeypatch.setattr(plan, "TARGETS", {})
    with pytest.raises(ConfigError, match="LoRA targets"):
        planned_runs(["experiment=fig9_bert", "datasets=[bioS_single]", "finetune=lora"])
