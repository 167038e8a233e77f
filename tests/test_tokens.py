import json

import numpy as np
import pytest
from transformers import AutoTokenizer

from biolab.data.dataset import DataConfig, write_dataset
from biolab.data.people import ATTRIBUTES
from biolab.data.tokens import (
    Corpus,
    encode_batches,
    load_tokenizer,
    prepare_corpus,
    tokenize_dataset,
    tokenize_texts,
    train_tokenizer,
)
from biolab.errors import ConfigError, DataFileError


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("tok") / "data"
    write_dataset(DataConfig(n_people=120, multi=2, permute=1, fullname=True), out, progress=False)
    return out


@pytest.fixture(scope="module")
def corpus(dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("tok") / "corpus"
    tokenize_dataset(dataset, out, vocab_size=600)
    return Corpus(out)


def test_tokenizer_round_trip_and_specials(corpus, dataset):
    tok = AutoTokenizer.from_pretrained(str(corpus.dir / "tokenizer"), local_files_only=True)
    assert tok.eos_token == "<|endoftext|>" and tok.pad_token == "<|pad|>" and len(tok) == 600
    text = json.loads((dataset / "bios.jsonl").read_text().splitlines()[7])["text"]
    assert tok.decode(tok(text)["input_ids"]) == text
    assert tok.decode(corpus.bio(7)) == text


def test_training_is_deterministic():
    texts = ["Anya Briar Forger was born on October 2, 1996."] * 5 + ["She works for Dow Inc."]
    a, b = train_tokenizer(texts, 300), train_tokenizer(texts, 300)
    assert a.backend_tokenizer.to_str() == b.backend_tokenizer.to_str()
    with pytest.raises(ConfigError, match="vocab_size must be >= 260"):
        train_tokenizer(texts, 100)


def test_attribute_spans_map_to_their_tokens(corpus, dataset):
    tok = corpus.tokenizer()
    bios = [json.loads(line) for line in (dataset / "bios.jsonl").read_text().splitlines()]
    assert corpus.n_bios == len(bios)
    for i, bio in enumerate(bios):
        ids = corpus.bio(i)
        for k, a in enumerate(ATTRIBUTES):
            s, e = corpus.bios["attr"][i, k]
            value = bio["text"][slice(*bio["spans"][a])]
            assert tok.decode(ids[s:e]).strip() == value
            assert s >= 1  # a token precedes every value: the P-probe position
        s, e = corpus.bios["name"][i]
        assert tok.decode(ids[s:e]).strip() == bio["text"][slice(*bio["spans"]["name"][0])]
    assert corpus.bios["split"].sum() * 2 == corpus.n_bios


def test_qa_answer_positions(corpus, dataset):
    tok = corpus.tokenizer()
    qas = [json.loads(line) for line in (dataset / "qa.jsonl").read_text().splitlines()]
    for i in range(0, len(qas), 37):
        ids, a = corpus.qa_text(i), corpus.qa["answer"][i]
        assert tok.decode(ids[:a]).endswith("Answer:")
        assert tok.decode(ids[a:]).strip().rstrip(".") == qas[i]["answer"].rstrip(".")
    assert set(np.unique(corpus.qa["attribute"])) == set(range(6))


def test_local_tokenizer_paths(corpus, tmp_path):
    folder = load_tokenizer(corpus.dir / "tokenizer")
    file = load_tokenizer(corpus.dir / "tokenizer" / "tokenizer.json")
    assert folder("Dow Inc.")["input_ids"] == file("Dow Inc.")["input_ids"]
    assert file.pad_token is not None
    with pytest.raises(ConfigError, match="neither a tokenizer folder nor a tokenizer.json"):
        load_tokenizer(tmp_path / "missing")


def test_prepare_corpus_reuses_and_refuses_mismatch(dataset, tmp_path, corpus):
    out = prepare_corpus(tmp_path, data_dir=dataset, tokenizer_path=corpus.dir / "tokenizer")
    assert Corpus(out).meta["vocab_size"] == 600
    stamp = (out / "bios.bin").stat().st_mtime_ns
    assert prepare_corpus(tmp_path, data_dir=dataset, tokenizer_path=corpus.dir / "tokenizer") == out
    assert (out / "bios.bin").stat().st_mtime_ns == stamp
    with pytest.raises(ConfigError, match=r"was tokenized with tokenizer.path=.*\(now None\)"):
        prepare_corpus(tmp_path, data_dir=dataset)  # a BPE of its own would be another vocabulary
    with pytest.raises(DataFileError, match="not a biolab dataset"):
        prepare_corpus(tmp_path / "x", data_dir=tmp_path)
    other = tmp_path / "gen"
    prepare_corpus(other, DataConfig(n_people=20), vocab_size=300)
    with pytest.raises(ConfigError, match="holds a different dataset"):
        prepare_corpus(other, DataConfig(n_people=21), vocab_size=300)
    with pytest.raises(ConfigError, match=r"tokenizer.vocab_size=300 \(now 400\); use a new out"):
        prepare_corpus(other, DataConfig(n_people=20), vocab_size=400)


def test_a_bad_vocab_size_is_refused_before_the_dataset_is_written(tmp_path):
    with pytest.raises(ConfigError, match="vocab_size must be >= 260"):
        prepare_corpus(tmp_path / "run", DataConfig(n_people=20), vocab_size=10)
    assert not (tmp_path / "run").exists()


def test_word_cache_encoder_equals_the_rust_encoder(corpus, dataset):
    tok = corpus.tokenizer()
    bios = [json.loads(line) for line in (dataset / "bios.jsonl").read_text().splitlines()]
    texts = [b["text"] for b in bios] + ["Winston–Salem, NC; Mayagüez;  two  spaces\tand tab 1996's"]
    spans = np.array([[b["spans"][a] for a in ATTRIBUTES] for b in bios] + [[[0, 3]] * 6])
    fast = tokenize_texts(tok, texts, spans, fast=True)
    rust = tokenize_texts(tok, texts, spans, fast=False)
    for a, b in zip(fast, rust, strict=True):
        assert np.array_equal(a, b)
    # many batches through two worker processes give the same as one process
    batches = list(encode_batches(tok, texts * 4, batch=16, workers=2))
    assert len(batches) > 4
    assert np.array_equal(np.concatenate([b[0] for b in batches]), np.tile(fast[0], 4))
