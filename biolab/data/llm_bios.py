"""bioR written by a local LLM (``data.style=bioR_llm``), as the paper made its bioR: each biography
asked of a causal LM with one of our instructions (package data: ``templates/llm/instructions.txt``)
and the person's six values, and sampled again until all six values and the full name appear
verbatim, up to ``data.llm.attempts`` tries.

The answer opens with the person's full name (the prompt ends with it and the model continues): every
bio starts with the name, as the template bios do, where the probes and the checks look for it.
Each try samples with a seed of its own, drawn from (dataset seed, person, rewrite, try), so the same
config gives the same bytes with the same model, engine and device. Accepted bios go to a cache, one
JSON line per (person, rewrite), appended batch by batch, so a killed generation resumes where it
stopped. The model is behind ``Generate``, a callable ``(prompts, seeds) -> continuations``: tests
script it, ``biolab.data.llm_engines.load_generator`` builds one from a local model folder
(transformers, or vLLM where it is installed and CUDA is there).
"""

from __future__ import annotations

import json
import os
import re
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np

from biolab.config import from_dict
from biolab.console import clock, plain_due, report_progress, tenth
from biolab.data.bios import Bio
from biolab.data.people import ATTRIBUTES, Person
from biolab.errors import ConfigError, DataFileError, GenerationError
from biolab.io import write_json

LLM_STYLE = "bioR_llm"
ENGINES = ("auto", "transformers", "vllm")
DTYPES = ("auto", "float32", "float16", "bfloat16")
NAME_SLOT = "{name}"
# Random streams of their own (people.py uses 0-5, bios.py 3, biod.py 31-33).
STREAM_REQUEST, STREAM_SAMPLING = 41, 42
FACT_LABELS = {
    "birth_date": "Birth date", "birth_city": "Birth city", "university": "University",
    "major": "Major (field of study)", "company": "Employer", "company_city": "Employer's city",
}  # fmt: skip
PRONOUN_WORDS = {"he": "he/him", "she": "she/her", "they": "they/them"}
RULE = "Write one paragraph of plain prose, and give every value above word for word, exactly as written."
CACHE_CONFIG, CACHE_BIOS = "config.json", "bios.jsonl"
# A blank line ends the bio: the instructions ask for one paragraph; what follows is something else
# (a note, a second version).
PARAGRAPH_BREAK = re.compile(r"\n\s*\n")
SENTENCE_ENDS = ".!?"

Generate = Callable[[Sequence["Prompt"], Sequence[int]], list[str]]


@dataclass(frozen=True)
class LLMConfig:
    """The ``data.llm`` section (with ``data.style: bioR_llm``)."""

    model: str | None = None  # a local model folder (config.json, weights, tokenizer); required
    attempts: int = 8  # tries per bio before the generation stops with the person's name
    max_new_tokens: int = 256
    temperature: float = 0.8
    top_p: float = 0.95
    batch_size: int = 16  # bios asked of the model at once
    engine: str = "auto"  # auto: vLLM where it is installed and CUDA is there, else transformers
    dtype: str = "auto"  # the weights' dtype on load (auto: the checkpoint's)
    instructions: str | None = None  # a file of our own instructions (default: the package's)

    @classmethod
    def from_dict(cls, d: dict | None) -> LLMConfig:
        return from_dict(cls, dict(d or {}), "data.llm")

    def validate(self) -> None:
        if not self.model:
            raise ConfigError(f"data.llm.model is required with data.style={LLM_STYLE}: a local model folder")
        for k in ("attempts", "max_new_tokens", "batch_size"):
            if getattr(self, k) < 1:
                raise ConfigError(f"data.llm.{k} must be >= 1, got {getattr(self, k)}")
        if not self.temperature > 0:
            raise ConfigError(f"data.llm.temperature must be > 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ConfigError(f"data.llm.top_p must be in (0, 1], got {self.top_p}")
        if self.engine not in ENGINES:
            raise ConfigError(f"data.llm.engine must be one of {ENGINES}, got {self.engine!r}")
        if self.dtype not in DTYPES:
            raise ConfigError(f"data.llm.dtype must be one of {DTYPES}, got {self.dtype!r}")


def load_instructions(path: str | None = None) -> tuple[str, ...]:
    """The instruction pool: one a line, ``#`` lines and blank lines skipped, each naming the person
    once as ``{name}`` (the package's file, or ``path``)."""
    if path is None:
        source = resources.files("biolab.data") / "templates" / "llm" / "instructions.txt"
    elif not Path(path).is_file():
        raise ConfigError(f"data.llm.instructions={path}: no such file")
    else:
        source = Path(path)
    instructions = []
    for number, line in enumerate(source.read_text(encoding="utf-8").splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.count(NAME_SLOT) != 1:
            raise DataFileError(f"{source}:{number}: an instruction names the person once, as {NAME_SLOT}")
        instructions.append(line)
    if not instructions:
        raise DataFileError(f"{source}: no instructions")
    return tuple(instructions)


@dataclass(frozen=True)
class Prompt:
    """What the model is asked: a user message and the start of its answer (the full name), which
    the model continues."""

    message: str
    opening: str


def request_plan(seed: int, person_id: int, rewrite: int, n_instructions: int) -> tuple[int, list[int]]:
    """The instruction and the order of the facts of one (person, rewrite): fixed across its tries,
    so that only the sampling differs between them."""
    rng = np.random.default_rng([seed, STREAM_REQUEST, person_id, rewrite])
    return int(rng.integers(n_instructions)), rng.permutation(len(ATTRIBUTES)).tolist()


def build_prompt(person: Person, instruction: str, order: Sequence[int]) -> Prompt:
    facts = [f"- {FACT_LABELS[ATTRIBUTES[i]]}: {person.value(ATTRIBUTES[i])}" for i in order]
    facts.append(f"- Pronouns: {PRONOUN_WORDS[person.pronoun]}")
    message = "\n\n".join([instruction.replace(NAME_SLOT, person.full_name), "\n".join(facts), RULE])
    return Prompt(message, person.full_name)


def sampling_seed(seed: int, person_id: int, rewrite: int, attempt: int) -> int:
    """The seed of one try, a 32-bit int (what every engine takes)."""
    state = np.random.SeedSequence([seed, STREAM_SAMPLING, person_id, rewrite, attempt]).generate_state(1)
    return int(state[0])


def finish_bio(opening: str, continuation: str) -> str:
    """The bio: the opening and the model's continuation up to a blank line, on one line (runs of
    white space made one space), cut after its last complete sentence (a bio cut by max_new_tokens
    ends mid-sentence)."""
    text = " ".join(PARAGRAPH_BREAK.split(opening + continuation, maxsplit=1)[0].split())
    end = max(text.rfind(mark) for mark in SENTENCE_ENDS)
    return text[: end + 1] if end >= 0 else text


def name_spans(text: str, name: str) -> list[list[int]]:
    """Every occurrence of the full name (what ``str.count`` counts, as the dataset check does)."""
    spans, at = [], text.find(name)
    while at >= 0:
        spans.append([at, at + len(name)])
        at = text.find(name, at + len(name))
    return spans


def occurrences(text: str, value: str) -> list[tuple[int, int]]:
    """Where ``value`` stands as words of its own ("Law" not inside "Lawrence")."""
    return [m.span() for m in re.finditer(rf"(?<!\w){re.escape(value)}(?!\w)", text)]


def overlaps(a: tuple[int, int], b: tuple[int, int]) -> bool:
    return a[0] < b[1] and b[0] < a[1]


def value_spans(text: str, person: Person, names: list[list[int]]) -> dict[str, list[int]]:
    """Each attribute's span: the first occurrence of its value outside the name and outside the
    values already placed (longest values first, so "Law" is not found inside "University of Law");
    a value two attributes share (a birth city that is also the employer's city) may share one
    occurrence. An attribute whose value is nowhere else is left out."""
    taken = [(s, e) for s, e in names]
    placed: dict[str, tuple[int, int]] = {}
    for a in sorted(ATTRIBUTES, key=lambda a: -len(person.value(a))):
        hits = occurrences(text, person.value(a))
        free = [h for h in hits if not any(overlaps(h, t) for t in taken)]
        shared = [h for h in hits if h in placed.values()]  # the very span of an equal value
        if free or shared:
            placed[a] = (free or shared)[0]
            taken.append(placed[a])
    return {a: list(placed[a]) for a in ATTRIBUTES if a in placed}


def bio_spans(text: str, person: Person) -> tuple[dict, list[str]]:
    """The spans of a bio as the template path records them (attributes in ATTRIBUTES order, then
    ``name``: every full-name occurrence), and what the text lacks (attribute names, ``name``)."""
    names = name_spans(text, person.full_name)
    spans: dict = value_spans(text, person, names)
    missing = [a for a in ATTRIBUTES if a not in spans] + ([] if names else ["name"])
    spans["name"] = names
    return spans, missing


def cached_config(data: dict) -> dict:
    """What a cached bio depends on, dotted keys (``llm.top_p``): the data config less its name and
    ``llm.attempts`` (more tries take the same bios, tries being seeded by their number, so a run
    stopped by a person's last try can go on with more)."""
    flat = {k: v for k, v in data.items() if k not in ("name", "llm")}
    flat.update({f"llm.{k}": v for k, v in (data.get("llm") or {}).items() if k != "attempts"})
    return flat


class BioCache:
    """Accepted bios, one JSON line per (person, rewrite) in ``folder/bios.jsonl``, appended a batch
    at a time; ``folder/config.json`` holds the ``cached_config`` of the dataset they were made for,
    and a cache made for another is refused. A line cut short by a kill is dropped on opening."""

    def __init__(self, folder: str | Path, data_config: dict):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.path = self.folder / CACHE_BIOS
        self.check_config(cached_config(data_config))
        self.records: dict[tuple[int, int], dict] = {}
        for record in self.read():
            self.records[(record["person_id"], record["entry"])] = record

    def check_config(self, config: dict) -> None:
        path = self.folder / CACHE_CONFIG
        if not path.is_file():
            write_json(path, config)
            return
        held = json.loads(path.read_text(encoding="utf-8"))
        if held != config:
            keys = sorted(k for k in {*held, *config} if held.get(k) != config.get(k))
            raise ConfigError(
                f"the bio cache {self.folder} was made for another data config (differs in "
                f"{', '.join(keys)}): remove it, or write to another out"
            )

    def read(self) -> Iterator[dict]:
        if not self.path.is_file():
            return
        data = self.path.read_bytes()
        whole = data[: data.rfind(b"\n") + 1]
        if len(whole) < len(data):  # a kill in the middle of an append
            with open(self.path, "r+b") as f:
                f.truncate(len(whole))
        for number, line in enumerate(whole.decode("utf-8").splitlines(), 1):
            try:
                yield json.loads(line)
            except ValueError:
                raise DataFileError(f"{self.path}:{number}: not a JSON line; remove the cache") from None

    def add(self, records: list[dict]) -> None:
        """Append ``records`` in one write, flushed to disk before the next batch starts."""
        text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        for r in records:
            self.records[(r["person_id"], r["entry"])] = r


@dataclass
class GenerationProgress:
    """A line a person can follow (bios done, rate, tries per bio, ETA) when ``console.plain_due`` says
    (a new tenth of the work, or PLAIN_SECONDS since the last) and at the end; and each batch's
    progress to run.py's board."""

    total: int  # bios
    show: bool = True
    done: int = 0
    generated: int = 0  # bios this process asked of the model (not from the cache)
    tries: int = 0
    started: float = field(default_factory=time.monotonic)
    last_line: float = field(default_factory=time.monotonic)
    last_tenth: int = 0

    def update(self, bios: int, generated: int, tries: int) -> None:
        self.done += bios
        self.generated += generated
        self.tries += tries
        report_progress(self.done, self.total)
        now, part = time.monotonic(), tenth(self.done, self.total)
        if self.show and (plain_due(part, self.last_tenth, now, self.last_line) or self.done == self.total):
            print(self.line(now), flush=True)
            self.last_line, self.last_tenth = now, part

    def line(self, now: float) -> str:
        rate = self.generated / max(now - self.started, 1e-9)
        eta = clock((self.total - self.done) / rate) if rate > 0 else "?"
        per = f", {self.tries / self.generated:.2f} tries per bio" if self.generated else ""
        return (
            f"{LLM_STYLE}: {self.done}/{self.total} bios ({100 * self.done / self.total:.0f}%), "
            f"{rate:.2f} bios/s{per}, ETA {eta}"
        )


class LLMBioWriter:
    """The bios of ``multi`` rewrites per person, from the cache or from the model. A chunk's
    (person, rewrite) slots go to the model in fixed batches of ``batch_size``, in person order; a batch
    the cache holds whole is taken from it, any other is generated whole, so a resumed run asks the
    model exactly what an uninterrupted one would. ``make_generator`` is called at the first batch
    the cache lacks (a fully cached run never loads the model)."""

    def __init__(
        self, llm: LLMConfig, seed: int, multi: int, cache: BioCache, make_generator: Callable[[], Generate],
        progress: GenerationProgress,
    ):  # fmt: skip
        self.llm, self.seed, self.multi, self.cache = llm, seed, multi, cache
        self.instructions = load_instructions(llm.instructions)
        self.make_generator = make_generator
        self.generate: Generate | None = None
        self.progress = progress
        self.tries: Counter = Counter()  # tries per accepted bio -> bios
        if cache.records and progress.show:
            print(f"{LLM_STYLE}: {len(cache.records)} bios from the cache {cache.folder}", flush=True)

    def bios(self, people: list[Person]) -> list[Bio]:
        slots = [(p, r) for p in people for r in range(self.multi)]
        out = []
        for start in range(0, len(slots), self.llm.batch_size):
            batch = slots[start : start + self.llm.batch_size]
            records = [self.cache.records.get((p.id, r)) for p, r in batch]
            generated = any(r is None for r in records)
            if generated:
                records = self.generate_batch(batch)
                self.cache.add(records)
            self.tries.update(r["tries"] for r in records)
            tries = sum(r["tries"] for r in records) if generated else 0
            self.progress.update(len(batch), len(batch) if generated else 0, tries)
            out += [record_bio(p, rec) for (p, _), rec in zip(batch, records, strict=True)]
        return out

    def prompt(self, person: Person, rewrite: int) -> tuple[int, Prompt]:
        index, order = request_plan(self.seed, person.id, rewrite, len(self.instructions))
        return index, build_prompt(person, self.instructions[index], order)

    def generate_batch(self, batch: list[tuple[Person, int]]) -> list[dict]:
        """Ask the model for every slot, then again for the rejected ones, until all are accepted;
        a slot still rejected after ``attempts`` tries stops the generation (GenerationError)."""
        if self.generate is None:
            self.generate = self.make_generator()
            if self.progress.show:
                engine = getattr(self.generate, "engine", "a given generator")
                device = getattr(self.generate, "device", None)
                where = f"{engine} on {device}" if device else engine
                print(f"{LLM_STYLE}: writing bios with {self.llm.model} ({where})", flush=True)
        asked = [self.prompt(p, r) for p, r in batch]
        records: list[dict | None] = [None] * len(batch)
        tries = [0] * len(batch)
        pending = list(range(len(batch)))
        while pending:
            seeds = [sampling_seed(self.seed, batch[i][0].id, batch[i][1], tries[i]) for i in pending]
            texts = self.generate([asked[i][1] for i in pending], seeds)
            if len(texts) != len(pending):
                raise GenerationError(f"the generator answered {len(texts)} prompts of {len(pending)}")
            rejected = []
            for i, continuation in zip(pending, texts, strict=True):
                (person, rewrite), (index, prompt) = batch[i], asked[i]
                tries[i] += 1
                text = finish_bio(prompt.opening, continuation)
                _, missing = bio_spans(text, person)
                if not missing:
                    records[i] = {"person_id": person.id, "entry": rewrite, "tries": tries[i],
                                  "instruction": index, "text": text}  # fmt: skip
                elif tries[i] >= self.llm.attempts:
                    raise GenerationError(give_up_message(person, rewrite, tries[i], missing))
                else:
                    rejected.append(i)
            pending = rejected
        return records

    def summary(self) -> dict:
        """What meta.json records of the generation: the pool and the tries each bio took."""
        return {
            "instructions": len(self.instructions),
            "tries_per_bio": {str(k): self.tries[k] for k in sorted(self.tries)},
        }


def give_up_message(person: Person, rewrite: int, tries: int, missing: list[str]) -> str:
    return (
        f"data.style={LLM_STYLE}: person {person.id} ({person.full_name}), rewrite {rewrite}: no bio with "
        f"all six values and the name in {tries} tries (data.llm.attempts); the last lacked "
        f"{', '.join(missing)}"
    )


def record_bio(person: Person, record: dict) -> Bio:
    spans, missing = bio_spans(record["text"], person)
    if missing or record["person_id"] != person.id:
        raise DataFileError(f"a cached bio of person {record['person_id']} does not fit person {person.id}")
    return Bio(person.id, record["entry"], record["text"], spans)


def default_cache_dir(out: str | Path) -> Path:
    """Where the bios of a dataset being written to ``out`` are cached: a hidden folder beside it
    (the dataset itself is written in a temp folder that a kill loses)."""
    out = Path(out)
    return out.parent / f".{out.name}.llm-cache"
