import json

import numpy as np
import pytest

from biolab.data.dataset import DataConfig, iter_jsonl, write_dataset
from biolab.data.qa import format_prompt
from biolab.data.tokens import Corpus, prepare_corpus
from biolab.eval.generate import generate_answers
from biolab.eval.qa import evaluate_qa, is_correct, majority_baseline, qa_items
from biolab.model import ModelConfig, build_model, load_model
from biolab.train.pretrain import TrainConfig, pretrain


@pytest.mark.parametrize(
    ("prediction", "answer", "ok"),
    [
        (" Meta Platforms.", "Meta Platforms", True),
        (" Meta Platforms", "Meta Platforms", True),
        (" Dow Inc.", "Dow Inc.", True),  # the value's period is the sentence's period
        (" Dow Inc..", "Dow Inc.", False),
        (" Meta Platforms..", "Meta Platforms", False),
        (" Meta", "Meta Platforms", False),  # partial
        (" Meta Platforms Inc.", "Meta Platforms", False),  # extra tokens
        (" Meta Platforms. Anya was", "Meta Platforms", False),
        (" October 2", "October 2, 1996", False),  # the birth date must be whole
        (" October 2, 1996.", "October 2, 1996", True),
        ("", "Meta Platforms", False),
    ],
)
def test_exact_match_edge_cases(prediction, answer, ok):
    assert is_correct(prediction, answer) is ok


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny model mixed-trained (BIO + QA) long enough to give varied answers."""
    root = tmp_path_factory.mktemp("ev")
    corpus = Corpus(prepare_corpus(root, DataConfig(n_people=60, multi=2), vocab_size=800))
    cfg = TrainConfig(steps=100, batch_size=8, ctx=64, lr=2e-3, warmup_steps=5, eval_every=0, ckpt_every=0,
                      qa_ratio=0.5, wandb="disabled")  # fmt: skip
    pretrain(root, corpus, ModelConfig(name="t", max_positions=64), cfg, progress=False)
    return root


def test_batched_generation_equals_one_at_a_time(trained):
    model, tok = load_model(trained / "model")
    prompts = [format_prompt(q["question"]) for q in qa_items(trained / "data", max_people=10)]
    batched = generate_answers(model, tok, prompts, batch_size=16, max_new_tokens=8)
    single = [generate_answers(model, tok, [p], batch_size=1, max_new_tokens=8)[0] for p in prompts]
    assert batched == single and len(set(batched)) > 1


def test_evaluation_writes_predictions_and_metrics(trained, tmp_path):
    model, tok = load_model(trained / "model")
    metrics = evaluate_qa(
        model, tok, trained / "data", tmp_path, max_people=5, progress=False, show_table=False
    )
    rows = [json.loads(r) for r in (tmp_path / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == 2 * 5 * 6
    assert set(rows[0]) == {"person_id", "attribute", "split", "prompt", "prediction", "answer", "correct"}
    assert json.loads((tmp_path / "metrics.json").read_text()) == metrics
    for split in ("train", "test"):
        m = metrics["splits"][split]
        assert set(m) == {"exact_match", "first_token", "majority", "questions"} and m["questions"] == 30


def test_splits_are_read_from_the_dataset(trained):
    split = {p["id"]: p["split"] for p in iter_jsonl(trained / "data" / "people.jsonl")}
    for which in ("train", "test"):
        items = qa_items(trained / "data", (which,))
        assert items and all(split[q["person_id"]] == which == q["split"] for q in items)


def test_an_untrained_model_scores_near_the_majority_baseline(tmp_path):
    data = tmp_path / "data"
    write_dataset(DataConfig(n_people=300), data, progress=False)
    corpus = Corpus(prepare_corpus(tmp_path, data_dir=data, vocab_size=400))
    model = build_model(
        ModelConfig(n_layer=2, n_head=2, d_model=32), corpus.vocab_size, corpus.eos, corpus.pad
    )
    metrics = evaluate_qa(
        model.eval(), corpus.tokenizer(), data, splits=("test",), progress=False, show_table=False
    )
    test = metrics["splits"]["test"]
    assert test["exact_match"]["mean"] <= test["majority"]["mean"] + 0.02


def test_majority_baseline_matches_the_papers_company_city(tmp_path):
    write_dataset(DataConfig(n_people=20000), tmp_path / "d", progress=False)
    items = qa_items(tmp_path / "d", ("test",))
    base = majority_baseline(tmp_path / "d", items)
    assert base["company_city"] == pytest.approx(0.137, abs=0.01)  # 36/263 companies in New York
    assert base["birth_date"] < 0.002 and np.isclose(
        base["mean"], np.mean([base[a] for a in base if a != "mean"])
    )
