import json
from dataclasses import replace

from biolab.data.people import ATTRIBUTES, sample_people
from biolab.data.qa import format_prompt, format_qa, qa_jsonl, qa_pairs, questions


def test_questions_use_the_papers_wording():
    q = questions()
    assert list(q) == list(ATTRIBUTES)
    assert q["birth_date"].format(name="Anya Briar Forger") == (
        "What is the birth date of Anya Briar Forger?"
    )
    assert q["university"] == "Which university did {name} study?"
    assert q["company_city"] == "Where did {name} work?"


def test_six_pairs_per_person_with_exact_answers(pools):
    person = sample_people(4, 0, pools)[2]
    pairs = qa_pairs(person)
    assert [p.attribute for p in pairs] == list(ATTRIBUTES)
    for p in pairs:
        assert p.answer == person.value(p.attribute)
        assert person.full_name in p.question and p.split == person.split
        assert p.person_id == person.id


def test_training_and_prompt_formats():
    q = "Which company did Anya Briar Forger work for?"
    assert format_prompt(q) == "Which company did Anya Briar Forger work for? Answer:"
    assert format_qa(q, "Meta Platforms") == f"{format_prompt(q)} Meta Platforms."
    assert format_qa(q, "Dow Inc.").endswith("Answer: Dow Inc.")
    assert format_qa(q, "x").startswith(format_prompt(q))


def test_hand_written_json_equals_json_dumps(pools):
    person = replace(sample_people(2, 0, pools)[0], full_name='Zoë "Q" Doe', major="A\\B")
    for qa in qa_pairs(person):
        assert qa.to_json() == json.dumps(qa.__dict__, ensure_ascii=False)


def test_qa_lines_without_the_objects_are_the_same_bytes(pools):
    people = sample_people(5, 0, pools)
    people[1] = replace(people[1], full_name='Zoë "Q" Doe', major="A\\B", company="Dow Inc.")
    assert qa_jsonl(people) == "".join(q.to_json() + "\n" for p in people for q in qa_pairs(p))
