"""Part 3.3 Results 10-12: junk bios mixed into pretraining (people never measured) and a domain token
before every useful bio, from the corpus through the stream and the exposures to the capacity loss."""

import json
import math
from dataclasses import replace

import numpy as np
import pytest
import torch
from test_capacity import Oracle

from biolab.data.dataset import DataConfig, write_dataset
from biolab.data.tokens import DOMAIN, Corpus, prefix_texts, tokenize_dataset, tokenize_texts
from biolab.errors import ConfigError
from biolab.eval.capacity import first_bios, span_losses
from biolab.pipeline.experiment import plan_experiment
from biolab.pipeline.runner import run_experiment
from biolab.report.write import write_report
from biolab.train.config import TrainConfig
from biolab.train.pretrain import exposure_plan, make_stream

BIOD = {"K": 3, "C": 2, "D": 8, "L": 2, "T": 6}


@pytest.fixture(scope="module")
def corpora(tmp_path_factory):
    """The same 12-person bioD dataset tokenized plain, and with 40 junk people and the domain token."""
    tmp = tmp_path_factory.mktemp("junk")
    write_dataset(DataConfig(name="d", style="bioD", n_people=12, biod=BIOD), tmp / "data", progress=False)
    junk = DataConfig(name="d_junk", style="bioD", n_people=40, biod=BIOD, seed=1)
    write_dataset(junk, tmp / "junk", progress=False)
    tokenize_dataset(tmp / "data", tmp / "plain", vocab_size=300)
    tokenize_dataset(tmp / "data", tmp / "mixed", vocab_size=300, junk_dir=tmp / "junk", domain_token=True)
    return tmp / "data", Corpus(tmp / "plain"), Corpus(tmp / "mixed")


def test_a_prefix_goes_before_every_text_and_moves_its_spans():
    ids, offsets = np.array([1, 2, 3, 4, 5]), np.array([0, 3, 5])
    tok = np.array([[[0, 1]], [[1, 2]]])
    out, new_offsets, new_tok = prefix_texts(ids, offsets, tok, 9)
    assert out.tolist() == [9, 1, 2, 3, 9, 4, 5] and new_offsets.tolist() == [0, 4, 7]
    assert new_tok.tolist() == [[[1, 2]], [[2, 3]]]


def test_the_domain_token_opens_every_useful_bio_and_the_junk_bios_are_other_people(corpora):
    _, plain, mixed = corpora
    d = mixed.domain_token_id
    assert d == mixed.tokenizer().convert_tokens_to_ids(DOMAIN) and plain.domain_token_id is None
    for i in range(plain.n_bios):
        assert mixed.bio(i).tolist() == [d, *plain.bio(i).tolist()]  # the same tokens, one reserved before
    np.testing.assert_array_equal(mixed.bios["attr"], plain.bios["attr"] + 1)
    junk = mixed.junk_set()
    assert len(junk) == 40 and plain.junk_set() is None
    assert d not in np.asarray(junk.ids)  # the junk carries no domain token
    assert mixed.meta["junk"]["bios"] == 40


def test_the_junk_fills_its_share_of_windows_and_exposures_count_the_useful_bios(corpora):
    _, plain, mixed = corpora
    cfg = TrainConfig(ctx=64, junk_fraction=0.75, exposures=100, warmup_steps=0, batch_size=8)
    windows = make_stream(mixed, cfg).next_windows(400)
    useful = np.array([mixed.domain_token_id in w for w in windows])  # every useful window opens a bio
    assert 0.65 < 1 - useful.mean() < 0.85
    with pytest.raises(ConfigError, match="needs junk bios"):
        make_stream(plain, cfg)
    alone = exposure_plan(mixed, replace(cfg, junk_fraction=0.0))["steps"]
    assert exposure_plan(mixed, cfg)["steps"] == pytest.approx(alone / 0.25, rel=0.05)


class OracleButOne(Oracle):
    """Knows every next token but one per row (logits index ``at[row]``): that one costs ln V."""

    def __init__(self, vocab, at):
        super().__init__(vocab)
        self.at = at

    def forward(self, input_ids, attention_mask=None):
        out = super().forward(input_ids, attention_mask)
        out.logits[torch.arange(len(self.at)), torch.as_tensor(self.at)] = 0.0
        return out


def test_the_capacity_loss_reads_each_bio_after_the_domain_token(corpora):
    data, _, mixed = corpora
    tok = mixed.tokenizer()
    texts, spans, _, _ = first_bios(data)
    _, _, token_spans = tokenize_texts(tok, texts, spans)
    # the name's last token: text token j sits at input position 2 + j (after EOS and the domain
    # token) and is predicted at logits index 1 + j; a span read one token off misses it
    last = token_spans[:, 0, 1] - 1
    model = OracleButOne(len(tok), 1 + last)
    losses = span_losses(model, tok, texts, spans, prefix=(mixed.domain_token_id,))
    assert np.allclose(losses[:, 0], math.log(len(tok))) and np.allclose(losses[:, 1:], 0.0)


def test_junk_and_the_domain_token_are_for_capacity_and_their_settings_are_checked():
    base = ["experiment=cap_fig1", "scale=tiny"]
    with pytest.raises(ConfigError, match="junk.people > 0 is for capacity: set qa_eval=none"):
        plan_experiment(["experiment=demo", "junk.people=100"])
    with pytest.raises(ConfigError, match="tokenizer.domain_token=true is for capacity"):
        plan_experiment(["experiment=demo", "tokenizer.domain_token=true"])
    with pytest.raises(ConfigError, match="junk.seed=0 is the dataset's own seed"):
        plan_experiment([*base, "junk.people=100", "junk.seed=0"])
    for bad in ("junk.people=1", "junk.fraction=1.0"):
        with pytest.raises(ConfigError, match="junk"):
            plan_experiment([*base, "junk.people=100", bad])


def test_the_junk_dataset_is_a_stage_of_its_own_the_plain_plan_unchanged():
    base = ["experiment=cap_fig1", "scale=tiny", "exposures=[100]"]
    plain = {r.manifest.run: r.manifest for r in plan_experiment(base)}
    junk = plan_experiment([*base, "junk.people=1000"])
    for run in junk:
        m, before = run.manifest, plain[run.manifest.run.split("__junk")[0]]
        assert m.folder("junk").startswith("data/") and m.folder("data") == before.folder("data")
        assert m.folder("corpus") != before.folder("corpus") and m.folder("pretrain") != before.folder(
            "pretrain"
        )
        pretrain = run.build[0]
        assert pretrain.config["train"]["junk_fraction"] == 0.875
        assert pretrain.inputs["corpus"].inputs["junk"].config["n_people"] == 1000


def test_a_tiny_junk_run_measures_capacity_on_the_useful_people_only(tmp_path):
    over = ["experiment=cap_fig1", "people=[16]", "exposures=[2]", "train.warmup_steps=0",
            "models={a: {n_layer: 1, n_head: 1, d_model: 16}}", "train.min_steps=null",
            "capacity.quantize=[]", "junk.people=30", "tokenizer.domain_token=true", "train.wandb=disabled",
            "progress=false"]  # fmt: skip
    torch.set_num_threads(1)
    (manifest,) = run_experiment(plan_experiment(over), tmp_path, progress=False, log=lambda m: None)
    stages = json.loads(manifest.read_text())["stages"]
    corpus = Corpus(tmp_path / stages["corpus"])
    assert corpus.meta["junk"]["bios"] == 30 and corpus.domain_token_id is not None
    trained = json.loads((tmp_path / stages["pretrain"] / "config.json").read_text())
    assert trained["train"]["junk_fraction"] == 0.875 and trained["exposures"]["asked"] == 2
    (row,) = json.loads((tmp_path / stages["capacity"] / "capacity.json").read_text())["rows"]
    assert row["N"] == 16 and row["people_read"] == 16  # the junk people are never measured
    # beside the same model without junk, the report tells the two apart by their setting
    plain = [o for o in over if not o.startswith(("junk.", "tokenizer."))]
    run_experiment(plan_experiment(plain), tmp_path, progress=False, log=lambda m: None)
    table = write_report(tmp_path).read_text().split("### ")[1:]
    models = next(t for t in table if "| setting |" in t and "bits (of the data's)" in t)
    lines = [line for line in models.splitlines() if "| a |" in line]  # model a, with and without junk
    assert len(lines) == 2 and lines[1].endswith("| junk 0.875 of windows, 30 junk people, domain token |")
