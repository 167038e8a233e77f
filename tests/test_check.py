import hashlib
import json

import pytest

from biolab.data.check import agreement_errors, check_dataset, count_sentences, mask_values, reverse_errors
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
        {"multi": 2, "reverse": 1},
        {"multi": 2, "reverse": 2},
        {"multi": 2, "reverse": 6},
        {"multi": 2, "permute": 1, "reverse": 6},
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


def test_reverse_check_finds_a_misplaced_name(pools, bioS_templates):
    import numpy as np

    from biolab.data.bios import render_bios_bioS
    from biolab.data.people import sample_people

    person = sample_people(3, 0, pools)[0]
    p = person.to_dict()
    bio = render_bios_bioS([person], bioS_templates, np.random.default_rng(0), reverse=1)[0]
    assert reverse_errors(bio.text, bio.spans, p, 1) == []
    assert reverse_errors(bio.text, bio.spans, p, 2) == ["name in sentence 2, expected 3"]
    plain = render_bios_bioS([person], bioS_templates, np.random.default_rng(0))[0]
    assert reverse_errors(plain.text, plain.spans, p, 1) == ["name in sentence 1, expected 2"]
    leak = bio.text.replace("The person", p["last_name"], 1)
    errors = reverse_errors(leak, {**bio.spans, **_shift(bio.spans, len(p["last_name"]) - 10)}, p, 1)
    assert "a part of the name occurs before the name" in errors
    last = render_bios_bioS([person], bioS_templates, np.random.default_rng(0), reverse=6)[0]
    assert reverse_errors(last.text, last.spans, p, 6) == []
    cut = last.text[: last.text.rindex(" This person")]
    assert reverse_errors(cut, {k: v for k, v in last.spans.items() if k != "name"}, p, 6)


def _shift(spans, d):
    return {k: [v[0] + d, v[1] + d] for k, v in spans.items() if k != "name"}


def test_an_odd_population_is_split_with_the_extra_person_in_p_test(tmp_path):
    """Issue 27: n_people=3 gives 1 train / 2 test, and the check accepted 2 / 1 as well; the rule
    (half each, P_test the odd one) is now the check's."""
    out = tmp_path / "d"
    write_dataset(DataConfig(n_people=3), out, progress=False)
    problems, stats = check_dataset(out)
    assert problems == [] and stats["splits"] == {"train": 1, "test": 2}
    moved = next(p["id"] for p in map(json.loads, (out / "people.jsonl").read_text().splitlines())
                 if p["split"] == "test")  # fmt: skip
    meta = json.loads((out / "meta.json").read_text())
    for name in ("people.jsonl", "qa.jsonl"):  # the person moved to P_train consistently
        rows = [json.loads(line) for line in (out / name).read_text().splitlines()]
        for row in rows:
            if row.get("id", row.get("person_id")) == moved:
                row["split"] = "train"
        data = "".join(json.dumps(row) + "\n" for row in rows).encode()
        (out / name).write_bytes(data)
        meta["sha256"][name] = hashlib.sha256(data).hexdigest()
    write_json(out / "meta.json", meta)
    problems, _ = check_dataset(out)
    assert problems == ["split is not half/half (with odd n, P_test has one more): "
                        "{'train': 2, 'test': 1}, expected {'train': 1, 'test': 2}"]  # fmt: skip
