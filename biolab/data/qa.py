"""The six questions per person (the paper's wording) and the QA text formats."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from json.encoder import encode_basestring
from operator import attrgetter

from biolab.data.people import ATTRIBUTES, Person
from biolab.errors import DataFileError

ANSWER_MARK = "Answer:"
_VALUES = attrgetter(*ATTRIBUTES)


def question_lines(name: str):
    """(path, line number, key, tab, template) of each line of a question file of the package data
    (``key<TAB>template``), blanks and ``#`` comments skipped; ``tab`` is "" on a line without one."""
    path = resources.files("biolab.data") / name
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line and not line.startswith("#"):
            yield (path, i, *line.partition("\t"))


@lru_cache(maxsize=1)
def questions() -> dict[str, str]:
    """attribute -> question template with ``{name}``, read from package data."""
    out = {}
    path = resources.files("biolab.data") / "questions.tsv"
    for path, i, attribute, sep, template in question_lines("questions.tsv"):
        if not sep or attribute not in ATTRIBUTES or template.count("{name}") != 1:
            raise DataFileError(f"{path}:{i}: expected 'attribute<TAB>question with {{name}}'")
        out[attribute] = template
    if set(out) != set(ATTRIBUTES):
        raise DataFileError(f"{path}: missing questions for {sorted(set(ATTRIBUTES) - set(out))}")
    return out


@dataclass(frozen=True)
class QA:
    person_id: int
    attribute: str
    question: str
    answer: str
    split: str

    def to_json(self) -> str:
        # by hand: 3x faster than json.dumps for the 600k lines of a 100k-people dataset
        return (
            f'{{"person_id": {self.person_id}, "attribute": "{self.attribute}", '
            f'"question": {encode_basestring(self.question)}, '
            f'"answer": {encode_basestring(self.answer)}, "split": "{self.split}"}}'
        )


def qa_pairs(person: Person) -> list[QA]:
    """The person's six QA pairs, in attribute order; answers are the exact value strings."""
    q = questions()
    return [
        QA(person.id, a, q[a].format(name=person.full_name), person.value(a), person.split)
        for a in ATTRIBUTES
    ]


def qa_jsonl(people: list[Person]) -> str:
    """The qa.jsonl lines of ``people``: ``QA.to_json`` of each of ``qa_pairs``, without making the
    600k QA objects of a 100k-people dataset (frozen dataclasses are slow to build)."""
    q = questions()
    per_attribute = [(f', "attribute": "{a}", "question": ', q[a]) for a in ATTRIBUTES]
    lines = []
    for p in people:
        head, tail, name = f'{{"person_id": {p.id}', f', "split": "{p.split}"}}\n', p.full_name
        for (attribute, template), answer in zip(per_attribute, _VALUES(p), strict=True):
            question = encode_basestring(template.format(name=name))
            lines.append(f'{head}{attribute}{question}, "answer": {encode_basestring(answer)}{tail}')
    return "".join(lines)


def format_prompt(question: str) -> str:
    """The evaluation prompt: the model continues with `` {answer}.``"""
    return f"{question} {ANSWER_MARK}"


def format_qa(question: str, answer: str) -> str:
    """A training example, ``{question} Answer: {answer}.``; a value that already ends in "."
    (e.g. "Dow Inc.") is not given a second one."""
    end = "" if answer.endswith(".") else "."
    return f"{format_prompt(question)} {answer}{end}"
