"""Sentence templates: parsing, validation and compilation for he / she / they / the full name.

Template syntax (one sentence per line, ``#`` starts a comment line):

- ``{subject}`` exactly once: the full name, or he/she/they (capitalised at a sentence start);
- ``{possessive}`` his/her/their, ``{object}`` him/her/them, ``{reflexive}`` himself/...;
- ``{<attribute>}``: each attribute the file covers exactly once (the file ``university+major.txt``
  covers two; ``filler.txt`` none);
- ``[singular|plural]``: a verb that agrees with the subject ("[was|were]"); "they" takes the
  plural form, a name, he and she the singular.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path

from biolab.data.people import ATTRIBUTES, PRONOUNS
from biolab.errors import DataFileError

PERSON_SLOTS = ("subject", "possessive", "object", "reflexive")
PRONOUN_FORMS = {
    "he": {"subject": "he", "possessive": "his", "object": "him", "reflexive": "himself"},
    "she": {"subject": "she", "possessive": "her", "object": "her", "reflexive": "herself"},
    "they": {"subject": "they", "possessive": "their", "object": "them", "reflexive": "themselves"},
}
STYLES = ("bioS", "bioR")
FILLER = "filler"
CONNECTIVES = "connectives"

_TOKEN = re.compile(r"\{([^{}\[\]]*)\}|\[([^{}\[\]|]*)\|([^{}\[\]|]*)\]")

# A compiled sentence is ``(head, ((slot, tail), ...))``: literal text, then each slot followed
# by the literal after it. ``slot`` is an attribute name, or NAME for the full name.
NAME = ""


@dataclass(frozen=True)
class Template:
    """One parsed sentence template covering ``attributes``."""

    text: str
    attributes: tuple[str, ...]
    source: str  # "path:line", for messages
    tokens: tuple = field(repr=False)  # ("lit", s) | ("slot", name) | ("verb", sing, plural)

    @property
    def subject_first(self) -> bool:
        return self.tokens[0] == ("slot", "subject")

    def compile(self, pronoun: str, use_name: bool, lead: bool) -> tuple:
        """The sentence for one subject choice; ``lead``: it starts the text (capitalise)."""
        return _compile(self, pronoun, use_name, lead)


@cache
def _compile(t: Template, pronoun: str, use_name: bool, lead: bool) -> tuple:
    forms = PRONOUN_FORMS[pronoun]
    plural = pronoun == "they" and not use_name
    head, slots, text = None, [], []  # text: the literal being built
    for i, tok in enumerate(t.tokens):
        if tok[0] == "lit":
            text.append(tok[1])
        elif tok[0] == "verb":
            text.append(tok[2] if plural else tok[1])
        elif tok[1] in forms and not (tok[1] == "subject" and use_name):
            word = forms[tok[1]]
            text.append(word[0].upper() + word[1:] if i == 0 and lead else word)
        else:
            slot = NAME if tok[1] == "subject" else tok[1]
            if head is None:
                head = "".join(text)
            else:
                slots[-1] = (slots[-1][0], "".join(text))
            slots.append((slot, ""))
            text = []
    if head is None:  # no slot at all (a filler with a pronoun subject)
        return "".join(text), ()
    slots[-1] = (slots[-1][0], "".join(text))
    return head, tuple(slots)


def parse_template(text: str, attributes: tuple[str, ...], source: str, style: str) -> Template:
    """Parse and validate one line; raise DataFileError naming ``source`` on any problem."""
    tokens: list[tuple] = []
    pos = 0
    for m in _TOKEN.finditer(text):
        if m.start() > pos:
            tokens.append(("lit", text[pos : m.start()]))
        if m.group(1) is not None:
            tokens.append(("slot", m.group(1)))
        else:
            if not m.group(2).strip() or not m.group(3).strip():
                raise DataFileError(f"{source}: empty verb form in {m.group(0)!r}")
            tokens.append(("verb", m.group(2), m.group(3)))
        pos = m.end()
    if pos < len(text):
        tokens.append(("lit", text[pos:]))

    for tok in tokens:
        if tok[0] == "lit" and any(c in tok[1] for c in "{}[]|"):
            raise DataFileError(f"{source}: unbalanced brace or bracket in {text!r}")
    slots = [tok[1] for tok in tokens if tok[0] == "slot"]
    allowed = set(PERSON_SLOTS) | set(attributes)
    for s in slots:
        if s not in allowed:
            raise DataFileError(
                f"{source}: unknown slot {{{s}}}; allowed here: "
                + ", ".join(f"{{{a}}}" for a in (*PERSON_SLOTS, *attributes))
            )
    if slots.count("subject") != 1:
        raise DataFileError(f"{source}: needs {{subject}} exactly once, found {slots.count('subject')}")
    for a in attributes:
        if slots.count(a) != 1:
            raise DataFileError(f"{source}: needs the value slot {{{a}}} exactly once")
    if tokens[0][0] == "slot" and tokens[0][1] in attributes:
        raise DataFileError(f"{source}: a value may not start the sentence")
    if style == "bioS" and tokens[0] != ("slot", "subject"):
        raise DataFileError(f"{source}: bioS templates must start with {{subject}}")
    if not text.endswith(".") or text.endswith(".."):
        raise DataFileError(f"{source}: a template is one sentence ending with a single '.'")
    return Template(text=text, attributes=attributes, source=source, tokens=tuple(tokens))


def _lines(path: Path):
    if not path.is_file():
        raise DataFileError(f"{path}: template file not found")
    for i, raw in enumerate(path.read_text(encoding="utf-8").split("\n"), 1):
        line = raw.rstrip("\r").strip()
        if line and not line.startswith("#"):
            yield i, line


def load_template_file(path: str | Path, style: str) -> list[Template]:
    """Templates of one file; its stem names the attributes (``a+b``) or is ``filler``."""
    path = Path(path)
    stem = path.stem
    attributes = () if stem == FILLER else tuple(stem.split("+"))
    for a in attributes:
        if a not in ATTRIBUTES:
            raise DataFileError(f"{path}: file name names unknown attribute {a!r}")
    out: list[Template] = []
    seen: dict[str, int] = {}
    for i, line in _lines(path):
        if line in seen:
            raise DataFileError(f"{path}:{i}: duplicate template (same as line {seen[line]})")
        seen[line] = i
        out.append(parse_template(line, attributes, f"{path}:{i}", style))
    if not out:
        raise DataFileError(f"{path}: no templates")
    return out


def load_connectives(path: str | Path) -> list[str]:
    path = Path(path)
    out = []
    for i, line in _lines(path):
        if not line.endswith(",") or any(c in line for c in "{}[]|"):
            raise DataFileError(f"{path}:{i}: a connective is plain text ending with ','")
        out.append(line)
    return out


@dataclass(frozen=True)
class TemplateSet:
    """All templates of one style, keyed by the tuple of attributes each covers."""

    style: str
    by_attributes: dict[tuple[str, ...], list[Template]]
    connectives: tuple[str, ...] = ()

    def __getitem__(self, attributes: str | tuple[str, ...]) -> list[Template]:
        key = (attributes,) if isinstance(attributes, str) else attributes
        return self.by_attributes[key]


def default_template_dir(style: str) -> Path:
    return Path(str(resources.files("biolab.data") / "templates" / style))


def load_templates(style: str, directory: str | Path | None = None) -> TemplateSet:
    """Load a style's templates; every attribute must have a single-attribute file."""
    if style not in STYLES:
        raise DataFileError(f"unknown template style {style!r}; choose from {', '.join(STYLES)}")
    root = Path(directory) if directory is not None else default_template_dir(style)
    by: dict[tuple[str, ...], list[Template]] = {}
    for path in sorted(root.glob("*.txt")):
        if path.stem == CONNECTIVES:
            continue
        templates = load_template_file(path, style)
        by[templates[0].attributes] = templates
    for a in ATTRIBUTES:
        if (a,) not in by:
            raise DataFileError(f"{root / (a + '.txt')}: template file not found")
    connectives: tuple[str, ...] = ()
    if style == "bioR":
        connectives = tuple(load_connectives(root / f"{CONNECTIVES}.txt"))
        if () not in by:
            raise DataFileError(f"{root / (FILLER + '.txt')}: template file not found")
    return TemplateSet(style=style, by_attributes=by, connectives=connectives)


__all__ = [
    "PRONOUNS",
    "Template",
    "TemplateSet",
    "load_connectives",
    "load_template_file",
    "load_templates",
    "parse_template",
]
