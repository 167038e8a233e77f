import hashlib
import json

import pytest

from biolab.data.check import agreement_errors, check_dataset, count_sentences, mask_values
from biolab.data.dataset import DataConfig, write_dataset
from biolab.io import write_json


@pytest.mark.parametrize(
    "kw",
    [
        {},
        {"fullname": True},
        {"multi": 5, "permute": 1, "fullname": True},
        {"permute": 2, "couple": True},
        {"style": "bioR", "multi": 2},
        {"style": "bioR", "fullname": True},
    ],
)
def test_generated_datasets_pass_the_independent_check(tmp_path, kw):
    cfg = DataConfig(n_people=300, **kw)
    write_dataset(cfg, tmp_path / "d", progress=False)
    problems, stats = check_dataset(tmp_path / "d")
    assert problems == []
    assert stats["bios"] == 300 * cfg.entries_per_person
    assert set(stats["names_per_bio"]) <= (
        {6} if kw.get("fullname") and kw.get("style") != "bioR" else set(range(1, 12))
    )


def test_check_finds_a_broken_span(tmp_path):
    out = tmp_path / "d"
    write_dataset(DataConfig(n_people=20), out, progress=False)
    lines = (out / "bios.jsonl").read_text().splitlines()
    bio = json.loads(lines[3])
    bio["spans"]["major"][0] += 1
    lines[3] = json.dumps(bio)
    data = ("\n".join(lines) + "\n").encode()
    (out / "bios.jsonl").write_bytes(data)
    meta = json.loads((out / "meta.json").read_text())
    meta["sha256"]["bios.jsonl"] = hashlib.sha256(data).hexdigest()
    write_json(out / "meta.json", meta)
    problems, _ = check_dataset(out)
    assert len(problems) == 1 and "span major" in problems[0]


def test_agreement_errors():
    assert agreement_errors("They was born. She were there. He have it. They has one.") == [
        "They was", "She were", "He have", "They has",
    ]  # fmt: skip
    assert agreement_errors("They were born. She was there. The hedge was trimmed.") == []


def test_sentence_count_masks_values_by_span_not_by_string():
    text = "Kiara Lee Hibbert worked for Kia. Kiara Lee Hibbert was born in St. Louis, MO."
    spans = {"company": [29, 32], "birth_city": [64, 77], "name": [[0, 17], [34, 51]]}
    assert mask_values(text, spans) == "Kiara Lee Hibbert worked for <V>. Kiara Lee Hibbert was born in <V>."
    assert count_sentences(text, spans) == 2
