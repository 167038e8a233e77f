import json

import pytest

from biolab.data.dataset import DataConfig, iter_jsonl, write_dataset
from biolab.data.people import ATTRIBUTES
from biolab.data.tokens import Corpus, prepare_corpus
from biolab.errors import ConfigError
from biolab.eval import memorization
from biolab.eval.memorization import (
    bio_completion,
    completion_correct,
    completion_prompt,
    longest_prefix,
    select_bios,
    verbatim,
)
from biolab.model import ModelConfig, build_model, load_model
from biolab.train.config import TrainConfig
from biolab.train.pretrain import pretrain

SMALL = ModelConfig(name="t", n_layer=2, n_head=2, d_model=64, max_positions=256)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A small model trained on 12 bioS_single bios until it recites parts of them, and the same
    shape untrained."""
    root = tmp_path_factory.mktemp("mem")
    corpus = Corpus(prepare_corpus(root, DataConfig(n_people=12), vocab_size=1000))
    cfg = TrainConfig(steps=60, batch_size=8, ctx=128, lr=5e-3, warmup_steps=5, eval_every=0, ckpt_every=0,
                      wandb="disabled")  # fmt: skip
    pretrain(root, corpus, SMALL, cfg, progress=False)
    model, tok = load_model(root / "model")
    untrained = build_model(SMALL, corpus.vocab_size, corpus.eos, corpus.pad).eval()
    return root / "data", model, untrained, tok


def test_completion_prompt_and_scoring_rules():
    text = "Anya Briar Forger was born on October 2, 1996. She worked for Dow Inc."
    date = [30, 45]
    prompt, expected = completion_prompt(text, date)
    assert (prompt, expected) == ("Anya Briar Forger was born on", " October 2, 1996.")
    assert completion_correct(" October 2, 1996. She worked", expected, at_end=False)
    assert not completion_correct(" October 2, 1996", expected, at_end=False)  # stops inside the bio
    assert not completion_correct(" October 2, 19967.", expected, at_end=False)
    assert not completion_correct(" October 2", expected, at_end=False)
    company = [62, 70]
    prompt, expected = completion_prompt(text, company)
    assert prompt.endswith("worked for") and expected == " Dow Inc."  # the last value: nothing after it
    assert completion_correct(" Dow Inc.", expected, at_end=True)
    assert not completion_correct(" Dow Inc. She", expected, at_end=True)
    assert completion_prompt(text, [0, 17]) == ("", "Anya Briar Forger ")  # the name, for reverse data
    assert longest_prefix([1, 2, 3, 9], [1, 2, 3, 4, 5]) == 3
    assert longest_prefix([1, 2], [1, 2, 3]) == 2 and longest_prefix([], [1]) == 0


def _oracle(data_dir, tok, right_person, wrong):
    """A stand-in for generation that knows every bio: it recites the rest of the bio for
    ``right_person`` and ``wrong(rest_ids)`` for everyone else."""
    bios = list(iter_jsonl(data_dir / "bios.jsonl"))

    def generate(model, tokenizer, seqs, *args, **kwargs):
        out = []
        for seq in seqs:
            prompt = tok.decode(seq[1:], clean_up_tokenization_spaces=False)
            (bio,) = [b for b in bios if b["text"].startswith(prompt) and (prompt or b["person_id"] == 0)]
            rest = tok(bio["text"], add_special_tokens=False)["input_ids"][len(seq) - 1 :]
            out.append(rest if bio["person_id"] == right_person else wrong(rest))
        return out

    return generate


def test_a_known_continuation_is_counted_right(run, monkeypatch):
    data, _, model, tok = run
    split = {p["id"]: p["split"] for p in iter_jsonl(data / "people.jsonl")}
    right = min(pid for pid, s in split.items() if s == "train")
    other = "test"
    monkeypatch.setattr(memorization, "generate_ids", _oracle(data, tok, right, lambda rest: rest[:1]))
    done = bio_completion(model, tok, data)
    assert done["bios"] == {"train": 6, "test": 6}
    assert all(done["splits"]["train"][a] == pytest.approx(1 / 6) for a in ATTRIBUTES)
    assert done["splits"][other]["mean"] == 0.0
    k = 8
    monkeypatch.setattr(memorization, "generate_ids", _oracle(data, tok, right, lambda rest: rest[:5] + [0]))
    v = verbatim(model, tok, data, k=k)
    assert v["splits"]["train"]["exact"] == pytest.approx(1 / 6)
    assert v["splits"][other]["exact"] == 0.0 and v["splits"][other]["prefix_mean"] == 5.0
    (text,) = [b["text"] for b in iter_jsonl(data / "bios.jsonl") if b["person_id"] == right]
    n_tokens = len(tok(text, add_special_tokens=False)["input_ids"])
    assert v["splits"]["train"]["prefix_mean"] == pytest.approx((n_tokens - k + 5 * 5) / 6)
    short = verbatim(model, tok, data, k=k, length=3)  # only the next 3 tokens count
    assert short["splits"][other]["exact"] == 1.0


def test_a_trained_model_recites_more_than_an_untrained_one(run):
    data, model, untrained, tok = run
    results = {}
    for name, m in (("trained", model), ("untrained", untrained)):
        results[name] = (bio_completion(m, tok, data), verbatim(m, tok, data, k=8))
        json.dumps(results[name])  # plain, JSON-able dicts
    (c_tr, v_tr), (c_un, v_un) = results["trained"], results["untrained"]
    assert c_tr["splits"]["train"]["mean"] > c_un["splits"]["train"]["mean"] + 0.15
    assert v_tr["splits"]["train"]["prefix_mean"] > v_un["splits"]["train"]["prefix_mean"] + 1
    assert set(v_tr["splits"]["train"]) == {
        "entries", "exact", "prefix_mean", "prefix_median", "prefix_frac", "target_mean",
    }  # fmt: skip


def test_selection_and_bad_arguments(run):
    data, _, untrained, tok = run
    assert len(select_bios(data, ("test",), max_people=2)) == 2
    assert {s for _, s in select_bios(data, ("train",))} == {"train"}
    with pytest.raises(ConfigError, match="attributes must be among"):
        bio_completion(untrained, tok, data, attributes=("hobby",))
    with pytest.raises(ConfigError, match="k and length must be >= 1"):
        verbatim(untrained, tok, data, k=0)
    with pytest.raises(ConfigError, match="splits must be a non-empty subset"):
        verbatim(untrained, tok, data, splits=("val",))
    with pytest.raises(ConfigError, match="no bios for splits"):
        verbatim(untrained, tok, data, entries=(3,))
    tiny = build_model(ModelConfig(name="t", n_layer=1, n_head=2, d_model=16, max_positions=32), len(tok),
                       tok.eos_token_id, tok.pad_token_id)  # fmt: skip
    with pytest.raises(ConfigError, match="the model has 32"):
        verbatim(tiny, tok, data, k=8)


def test_name_completion_on_reverse_data(run, tmp_path):
    _, model, _, tok = run
    data = tmp_path / "rev"
    write_dataset(DataConfig(n_people=4, reverse=6), data, progress=False)
    bios = list(iter_jsonl(data / "bios.jsonl"))
    prompt, expected = completion_prompt(bios[0]["text"], bios[0]["spans"]["name"][0])
    assert prompt.endswith("This person's name is") and expected.endswith(".")
    out = bio_completion(model, tok, data, attributes=("name", "major"))
    assert set(out["splits"]["train"]) == {"name", "major", "mean"}
