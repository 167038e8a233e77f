import numpy as np
import pytest

from biolab.data.dataset import DataConfig, iter_jsonl, write_dataset
from biolab.data.people import ATTRIBUTES, MONTHS
from biolab.data.tokens import train_tokenizer
from biolab.errors import ConfigError
from biolab.probe.tasks import TASKS, load_probe_data, query_inputs, special_positions, token_positions


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("pt") / "data"
    write_dataset(DataConfig(n_people=30, multi=2, permute=1, fullname=True), out)
    tok = train_tokenizer([b["text"] for b in iter_jsonl(out / "bios.jsonl")], 600)
    return out, tok


def test_eleven_tasks():
    assert len(TASKS) == 11 and TASKS[0] == ("birth_date", "first")
    assert ("birth_date", "whole") not in TASKS


def test_special_positions_sit_right_before_each_attribute_in_text_order(dataset):
    out, tok = dataset
    data = load_probe_data(out, tok, entry=1)
    people = {p["id"]: p for p in iter_jsonl(out / "people.jsonl")}
    pos, seen = special_positions(data.spans)
    for i in range(len(data.person_id)):
        order = np.argsort(data.spans[i, :, 0])
        for k, a in enumerate(order):
            value = people[data.person_id[i]][ATTRIBUTES[a]]
            ids = data.bio_ids[i]
            # bio token t is input index t + 1; the value starts right after the special position
            after = tok.decode(ids[pos[i, k] + 2 : pos[i, k] + 2 + 40].tolist())
            assert after.lstrip().startswith(value.rstrip(".")), (after, value)
            assert seen[i, k, a] == 0 and seen[i, k, order[:k]].all()


def test_labels_name_each_persons_values(dataset):
    out, tok = dataset
    data = load_probe_data(out, tok)
    people = {p["id"]: p for p in iter_jsonl(out / "people.jsonl")}
    for t, (attribute, kind) in enumerate(TASKS):
        for i, pid in enumerate(data.person_id):
            value = people[pid][attribute]
            name = data.classes[t][data.labels[i, t]]
            if attribute == "birth_date":
                assert name == value.split()[0] and data.classes[t] == list(MONTHS)
            elif kind == "whole":
                assert name == value
            else:
                assert value.startswith(name.strip()) and name.strip()
    assert data.train.sum() == 15 and set(data.person_id) == set(range(30))


def test_token_positions_stop_at_each_entry_end():
    pos = token_positions([np.array([0, 7, 8, 9]), np.array([0, 5])], 4)
    assert pos.tolist() == [[0, 1, 2, -1], [0, -1, -1, -1]]


def test_query_is_the_name_between_start_and_end_tokens(dataset):
    out, tok = dataset
    data = load_probe_data(out, tok, max_people=4)
    q = query_inputs(tok, data.names, tok.eos_token_id)
    for ids, name in zip(q, data.names, strict=True):
        assert ids[0] == ids[-1] == tok.eos_token_id and tok.decode(ids[1:-1].tolist()) == name
    assert len(q[0]) == len(query_inputs(tok, data.names, None)[0]) + 1


def test_bad_entry_and_too_few_people(dataset):
    out, tok = dataset
    with pytest.raises(ConfigError, match="entries per person"):
        load_probe_data(out, tok, entry=2)
    with pytest.raises(ConfigError, match="at least 4"):
        load_probe_data(out, tok, max_people=2)


def test_several_entries_load_person_by_person_with_shared_classes(dataset):
    out, tok = dataset
    both = load_probe_data(out, tok, entry=[0, 1])
    first, second = load_probe_data(out, tok, entry=0), load_probe_data(out, tok, entry=1)
    assert (
        both.entry.tolist() == [0, 1] * 30
        and both.person_id.tolist() == np.repeat(first.person_id, 2).tolist()
    )
    for t in range(len(TASKS)):
        for i in range(30):
            for row, single in ((2 * i, first), (2 * i + 1, second)):
                assert both.classes[t][both.labels[row, t]] == single.classes[t][single.labels[i, t]]
    kept = both.take(np.flatnonzero(both.entry == 1))
    assert kept.names == second.names and (kept.spans == second.spans).all()
