import json
from dataclasses import replace

import pytest

from biolab.data.dataset import DataConfig, write_dataset
from biolab.data.manipulation import (
    COMPARE_TASKS,
    HINT_TASKS,
    INVERSE,
    INVERSE_TASKS,
    TASKS,
    ambiguity,
    build_items,
    format_item,
    format_task_prompt,
    hint_correct,
    is_correct_item,
    load_task_set,
    task_items,
    task_questions,
    write_task_set,
)
from biolab.data.people import MONTHS, sample_people
from biolab.errors import ConfigError, DataFileError


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    out = tmp_path_factory.mktemp("t32") / "data"
    write_dataset(DataConfig(n_people=400, seed=3), out, progress=False)
    return out


@pytest.fixture(scope="module")
def people(data):
    return [json.loads(line) for line in (data / "people.jsonl").read_text().splitlines()]


def month(p):
    return MONTHS.index(p["birth_date"].split(" ")[0]) + 1


def test_every_task_has_a_question_with_its_slots():
    q = task_questions()
    assert set(q) == set(TASKS) and len(INVERSE_TASKS) == 10
    assert "{birth_date}" in q["bdate_to_first"] and "{name2}" in q["month_compare"]


@pytest.mark.parametrize("task", INVERSE_TASKS)
def test_inverse_search_answers_and_split_hygiene(people, task):
    items = build_items(people, task)
    attrs = INVERSE[task.split("_to_")[0]]
    key = "full_name" if task.endswith("_full") else "first_name"
    by_id = {p["id"]: p for p in people}
    assert sum(len(it["person_ids"]) for it in items) == len(people)  # every person in one query
    for it in items:
        members = [by_id[i] for i in it["person_ids"]]
        values = {tuple(m[a] for a in attrs) for m in members}
        assert len(values) == 1  # one query, one set of values
        every_match = [p for p in people if tuple(p[a] for a in attrs) in values]
        assert it["answers"] == sorted({m[key] for m in every_match})
        assert all(members[0][a] in it["question"] for a in attrs)
        assert it["answer"] in it["answers"] and is_correct_item(it, f" {it['answer']}.")
        splits = {m["split"] for m in members}
        assert it["split"] == ("test" if "test" in splits else "train")
    train = [it for it in items if it["split"] == "train"]
    test = [it for it in items if it["split"] == "test"]
    assert train and test
    # a P_test person's question is never a training item, in any form of the training text
    test_ids = {p["id"] for p in people if p["split"] == "test"}
    assert not test_ids & {i for it in train for i in it["person_ids"]}
    assert not {it["question"] for it in test} & {it["question"] for it in train}
    train_texts = "\n".join(format_item(it) for it in train)
    assert not any(format_task_prompt(it["question"]) in train_texts for it in test)


def test_ambiguous_queries_accept_any_matching_name(pools):
    ps = [
        replace(p, birth_date="May 5, 1950") if i < 4 else p
        for i, p in enumerate(sample_people(40, 8, pools))
    ]
    ps[1] = replace(ps[1], first_name=ps[0].first_name)
    ps = [{**p.to_dict(), "split": "train" if i in (0, 1, 3) else p.split} for i, p in enumerate(ps)]
    ps[2]["split"] = "test"
    items = build_items(ps, "bdate_to_first")
    shared = [it for it in items if "May 5, 1950" in it["question"]]
    assert len(shared) == 1
    it = shared[0]
    assert it["split"] == "test" and it["person_ids"] == [0, 1, 2, 3]
    assert it["answer"] == ps[2]["first_name"]  # the target is a person of the item's split
    assert it["answers"] == sorted({ps[i]["first_name"] for i in range(4)})
    for i in range(4):
        assert is_correct_item(it, " " + ps[i]["first_name"] + ".")
    outsider = next(p["first_name"] for p in ps if p["first_name"] not in it["answers"])
    assert not is_correct_item(it, " " + outsider)
    stats = ambiguity(items)
    assert stats["test"]["shared"] >= 1 and stats["test"]["max_people"] == 4
    assert stats["test"]["ambiguous"] >= 1
    # two matches with one first name: shared, yet not ambiguous
    pair = [{**ps[0], "split": "train"}, {**ps[1], "split": "train"}]
    solo = ambiguity(build_items(pair, "bdate_to_first"))["train"]
    assert (solo["shared"], solo["ambiguous"]) == (1, 0)
    with pytest.raises(ConfigError, match="inverse-search items only"):
        ambiguity(build_items(pair, "birth_year"))


def test_partial_retrieval_and_classification_answers(people):
    by_id = {p["id"]: p for p in people}
    for task in ("birth_day", "birth_year", "month_parity", "month_number"):
        items = build_items(people, task)
        assert len(items) == len(people)
        for it in items:
            p = by_id[it["person_ids"][0]]
            assert it["split"] == p["split"] and p["full_name"] in it["question"]
            date = p["birth_date"]
            want = {
                "birth_day": date.split(" ")[1].rstrip(","),
                "birth_year": date.split(" ")[2],
                "month_parity": "Yes" if month(p) % 2 == 0 else "No",
                "month_number": str(month(p)),
            }[task]
            assert it["answer"] == want and it["answers"] == [want]
            assert it["hint"] == (date.split(" ")[0] + "." if task in HINT_TASKS else None)
    parity = build_items(people, "month_parity")
    assert 0.3 < sum(it["answer"] == "Yes" for it in parity) / len(parity) < 0.7


def test_month_comparison_pairs(people):
    items = build_items(people, "month_compare", n_train=150, n_test=120, seed=4)
    by_id = {p["id"]: p for p in people}
    assert [it["split"] for it in items] == ["train"] * 150 + ["test"] * 120
    assert len({tuple(it["person_ids"]) for it in items}) == len(items)  # no pair twice
    for it in items:
        a, b = (by_id[i] for i in it["person_ids"])
        assert a["split"] == b["split"] == it["split"]  # P_test people never in a training pair
        assert month(a) != month(b)
        assert it["answer"] == ("Yes" if month(a) > month(b) else "No")
        assert it["hint"] == f"{MONTHS[month(a) - 1]}; {MONTHS[month(b) - 1]}."
        assert it["question"].index(a["full_name"]) < it["question"].index(b["full_name"])
    assert 0.35 < sum(it["answer"] == "Yes" for it in items) / len(items) < 0.65
    default = build_items(people, "month_compare")
    assert sum(it["split"] == "train" for it in default) == sum(p["split"] == "train" for p in people)
    with pytest.raises(ConfigError, match="pairs with different months exist"):
        build_items(people[:6], "month_compare", n_train=40)


@pytest.mark.parametrize("task", HINT_TASKS)
def test_hint_insertion_rate_and_formats(people, task):
    many = people * 5 if task not in COMPARE_TASKS else people
    items = build_items(many, task, n_train=None if task not in COMPARE_TASKS else 1000, hint_prob=0.5)
    train = [it for it in items if it["split"] == "train"]
    rate = sum(it["use_hint"] for it in train) / len(train)
    assert 0.45 < rate < 0.55
    assert not any(it["use_hint"] for it in items if it["split"] == "test")  # tested both ways
    for prob, want in ((0.0, 0), (1.0, len(train))):
        got = build_items(many, task, n_train=len(train) if task in COMPARE_TASKS else None, hint_prob=prob)
        assert sum(it["use_hint"] for it in got) == want
    it = train[0]
    q, a, h = it["question"], it["answer"], it["hint"]
    assert format_item(it, hint=False) == f"{q} Answer: {a}."
    assert format_item(it, hint=True) == f"{q} Facts: {h} Answer: {a}."
    assert format_item(it) == format_item(it, hint=it["use_hint"])
    assert format_task_prompt(q) == f"{q} Answer:" and format_task_prompt(q, hint=True) == f"{q} Facts:"
    written = format_item(it, hint=True)[len(format_task_prompt(q, hint=True)) :]
    assert hint_correct(it, written) and is_correct_item(it, written, hint=True)
    assert not is_correct_item(it, written, hint=False)  # the facts are not the answer
    assert not is_correct_item(it, f" {h}", hint=True)  # facts but no answer
    assert is_correct_item(it, f" {a}.") and not hint_correct(it, " Nonember. Answer: Yes.")


def test_hint_draws_do_not_move_the_subset(people):
    a = build_items(people, "month_parity", n_train=50, hint_prob=0.2, seed=1)
    b = build_items(people, "month_parity", n_train=50, hint_prob=0.9, seed=1)
    assert [it["person_ids"] for it in a] == [it["person_ids"] for it in b]
    with pytest.raises(ConfigError, match="has no hint"):
        format_item(build_items(people, "birth_day")[0], hint=True)


def test_training_sizes_are_seeded_subsets(people):
    a = build_items(people, "birth_year", n_train=30, n_test=10, seed=1)
    assert [it["split"] for it in a] == ["train"] * 30 + ["test"] * 10
    assert a == build_items(people, "birth_year", n_train=30, n_test=10, seed=1)
    assert a != build_items(people, "birth_year", n_train=30, n_test=10, seed=2)
    ids = [it["person_ids"][0] for it in a[:30]]
    assert ids == sorted(ids)  # kept in person order
    with pytest.raises(ConfigError, match="only 200 available"):
        build_items(people, "birth_year", n_train=201)


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"task": "month_mod7"}, "unknown manipulation task 'month_mod7'; choose from: bdate_to_first"),
        ({"task": "birth_day", "n_train": -1}, "n_train must be None"),
        ({"task": "birth_day", "n_test": 2.5}, "n_test must be None"),
        ({"task": "month_parity", "hint_prob": 1.5}, r"hint_prob must be in \[0, 1\]"),
    ],
)
def test_bad_arguments_fail_before_any_work(data, tmp_path, kw, message):
    with pytest.raises(ConfigError, match=message):
        write_task_set(data, out=tmp_path / "t", **kw)
    assert list(tmp_path.iterdir()) == []


def test_write_task_set_is_deterministic_and_verified(data, tmp_path):
    a = write_task_set(data, "month_compare", tmp_path / "a", n_train=100, seed=5)
    b = write_task_set(data, "month_compare", tmp_path / "b", n_train=100, seed=5)
    c = write_task_set(data, "month_compare", tmp_path / "c", n_train=100, seed=6)
    for f in ("items.jsonl", "meta.json"):
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes()
    assert a == b and c["sha256"] != a["sha256"]
    assert a["counts"] == {"train": 100, "test": 200, "train_with_hint": a["counts"]["train_with_hint"]}
    meta, items = load_task_set(tmp_path / "a")
    assert meta == a and items == task_items(data, "month_compare", n_train=100, seed=5)
    inv = write_task_set(data, "bdate_to_full", tmp_path / "inv")
    assert inv["ambiguity"]["test"]["queries"] == inv["counts"]["test"]
    with pytest.raises(ConfigError, match="not empty; pass overwrite=true"):
        write_task_set(data, "birth_day", tmp_path / "a")
    write_task_set(data, "birth_day", tmp_path / "a", overwrite=True)
    with open(tmp_path / "a" / "items.jsonl", "a") as f:
        f.write("{}\n")
    with pytest.raises(DataFileError, match="sha256 mismatch"):
        load_task_set(tmp_path / "a")
    with pytest.raises(DataFileError, match="not a task set"):
        load_task_set(tmp_path)
    old = json.loads((tmp_path / "b" / "meta.json").read_text()) | {"kind": "tasks32"}  # before the rename
    (tmp_path / "b" / "meta.json").write_text(json.dumps(old))
    assert load_task_set(tmp_path / "b")[0]["kind"] == "tasks32"
