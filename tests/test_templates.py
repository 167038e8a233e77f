import pytest

from biolab.data.check import agreement_errors
from biolab.data.people import ATTRIBUTES, PRONOUNS
from biolab.data.templates import NAME, load_template_file, load_templates, parse_template
from biolab.errors import DataFileError

VALUES = {
    "birth_date": "October 2, 1996", "birth_city": "Durham, NC", "university": "Haverford College",
    "major": "Communications", "company": "Meta Platforms", "company_city": "Menlo Park, CA",
}  # fmt: skip


def render(t, pronoun, use_name, lead=True):
    head, slots = t.compile(pronoun, use_name, lead)
    return head + "".join(
        ("Anya Briar Forger" if slot == NAME else VALUES[slot]) + tail for slot, tail in slots
    )


@pytest.mark.parametrize("style", ["bioS", "bioR"])
def test_every_template_is_grammatical_for_every_subject(style):
    ts = load_templates(style)
    for templates in ts.by_attributes.values():
        for t in templates:
            for pronoun in PRONOUNS:
                for use_name in (False, True):
                    for lead in (True, False):
                        text = render(t, pronoun, use_name, lead)
                        assert not agreement_errors(text), (t.source, text)
                        assert "{" not in text and "[" not in text, (t.source, text)


def test_bioS_has_about_fifty_distinct_templates_per_attribute(bioS_templates):
    for a in ATTRIBUTES:
        texts = [t.text for t in bioS_templates[a]]
        assert len(set(texts)) >= 45, a
        assert all(t.subject_first for t in bioS_templates[a])


def test_bioR_has_merged_clauses_fillers_and_connectives(bioR_templates):
    assert ("university", "major") in bioR_templates.by_attributes
    assert len(bioR_templates[()]) >= 20  # fillers carry no attribute
    assert all(c.endswith(",") for c in bioR_templates.connectives)
    for templates in bioR_templates.by_attributes.values():
        assert any(t.subject_first for t in templates)  # an entry can open with the name


def test_pronoun_agreement_and_possessives():
    t = parse_template(
        "{subject} [owes|owe] {possessive} roots to {birth_city}.", ("birth_city",), "x:1", "bioS"
    )
    assert render(t, "they", False) == "They owe their roots to Durham, NC."
    assert render(t, "she", False) == "She owes her roots to Durham, NC."
    assert render(t, "they", True) == "Anya Briar Forger owes their roots to Durham, NC."
    assert render(t, "he", False, lead=False) == "he owes his roots to Durham, NC."
    assert t.compile("he", True, True) == ("", ((NAME, " owes his roots to "), ("birth_city", ".")))


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{subject} was born.", r"needs the value slot \{birth_date\}"),
        ("{subject} was born on {birthday}.", r"unknown slot \{birthday\}; allowed here"),
        ("{subject} met {subject} on {birth_date}.", r"needs \{subject\} exactly once"),
        ("On {birth_date} {subject} was born.", "bioS templates must start with"),
        ("{subject} was born on {birth_date}", "a template is one sentence ending with"),
        ("{subject} [was|were born on {birth_date}.", "unbalanced brace or bracket"),
        ("{subject} [was|] born on {birth_date}.", "empty verb form"),
    ],
)
def test_bad_template_is_rejected_with_file_and_line(tmp_path, line, message):
    path = tmp_path / "birth_date.txt"
    path.write_text(f"# a comment\n{{subject}} was born on {{birth_date}}.\n{line}\n")
    with pytest.raises(DataFileError, match=rf"birth_date\.txt:3: {message}"):
        load_template_file(path, "bioS")


def test_file_level_errors(tmp_path):
    (tmp_path / "eye_color.txt").write_text("{subject} has {eye_color} eyes.\n")
    with pytest.raises(DataFileError, match="unknown attribute 'eye_color'"):
        load_template_file(tmp_path / "eye_color.txt", "bioS")
    dup = tmp_path / "major.txt"
    dup.write_text("{subject} studied {major}.\n{subject} studied {major}.\n")
    with pytest.raises(DataFileError, match=r"major\.txt:2: duplicate template \(same as line 1\)"):
        load_template_file(dup, "bioS")
    (tmp_path / "eye_color.txt").unlink()
    dup.write_text("{subject} studied {major}.\n")
    with pytest.raises(DataFileError, match=r"birth_date\.txt: template file not found"):
        load_templates("bioS", tmp_path)
    with pytest.raises(DataFileError, match="unknown template style"):
        load_templates("bioX")
    value_first = "{birth_city} is where {subject} [was|were] born."
    with pytest.raises(DataFileError, match="a value may not start the sentence"):
        parse_template(value_first, ("birth_city",), "x:1", "bioR")
