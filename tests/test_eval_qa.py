import importlib.util
import json
import re
from pathlib import Path

import numpy as np
import pytest

from biolab.cli import compose
from biolab.data.dataset import DataConfig, iter_jsonl, write_dataset
from biolab.data.qa import format_prompt
from biolab.data.tokens import Corpus, prepare_corpus
from biolab.errors import ConfigError
from biolab.eval.generate import generate_answers
from biolab.eval.qa import EvalConfig, evaluate_qa, is_correct, majority_baseline, qa_items
from biolab.model import ModelConfig, build_model, load_model
from biolab.train.config import TrainConfig
from biolab.train.pretrain import pretrain

ROOT = Path(__file__).resolve().parent.parent


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


def evaluate_script():
    spec = importlib.util.spec_from_file_location("evaluate_script", ROOT / "scripts" / "evaluate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main.__wrapped__  # undecorated: run in-process on a composed config


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """A bioS and a bioD dataset, and a run folder whose model/ is a model (by its config.json
    alone: each case below must be refused before a model is loaded)."""
    root = tmp_path_factory.mktemp("evaluate")
    write_dataset(DataConfig(n_people=4), root / "data", progress=False)
    biod = DataConfig(style="bioD", n_people=4, biod={"K": 2, "C": 2, "D": 4, "L": 1, "T": 4})
    write_dataset(biod, root / "biod", progress=False)
    (root / "run" / "model").mkdir(parents=True)
    (root / "run" / "config.json").write_text(json.dumps({"train": {}}))  # a training run's own
    (root / "run" / "model" / "config.json").write_text(json.dumps({"model_type": "gpt_neox"}))
    (root / "file").write_text("")
    return root


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["model_dir={r}/run"], "model_dir={r}/run is not a model folder (a config.json without model_type); "
                                "pass model_dir={r}/run/model"),
        (["model_dir={r}/nowhere"], "model_dir={r}/nowhere is not a model folder (it does not exist)"),
        (["batch_size=0"], "batch_size must be >= 1, got 0"),
        (["num_beams=0"], "num_beams must be >= 1, got 0"),
        (["max_people=-1"], "max_people must be null or >= 1, got -1"),
        (["data_dir={r}/biod"], "data_dir={r}/biod is a bioD dataset: it has none of the six QA attributes"),
        (["out={r}/file/eval"], "out={r}/file/eval is not writable"),
    ],
)  # fmt: skip
def test_evaluate_refuses_bad_input_before_loading_a_model(folders, args, message):
    """Issue 27: each of these was a traceback (model_dir=RUN: transformers' "Unrecognized model";
    bioD: KeyError 'birth_date'; an unwritable out: after all the work) or, max_people=-1, a
    silent 174 of 180 questions."""
    defaults = {"model_dir": "{r}/run/model", "data_dir": "{r}/data", "out": "{r}/eval"}
    given = dict(a.split("=", 1) for a in args)
    overrides = [f"{k}={v}".replace("{r}", str(folders)) for k, v in {**defaults, **given}.items()]
    with pytest.raises(ConfigError, match=re.escape(message.replace("{r}", str(folders)))):
        evaluate_script()(compose("evaluate", overrides))
    assert not (folders / "eval").exists()


def test_qa_evaluation_refuses_a_biod_dataset(folders):
    with pytest.raises(ConfigError, match="is a bioD dataset"):
        qa_items(folders / "biod")


@pytest.mark.parametrize("key", ["batch_size", "num_beams"])
def test_eval_config_names_the_bad_key(key):
    with pytest.raises(ConfigError, match=f"^eval.{key} must be >= 1, got 0$"):
        EvalConfig.from_dict({key: 0})
