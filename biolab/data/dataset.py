"""Build, write and load a dataset folder: people.jsonl, bios.jsonl, qa.jsonl, meta.json."""

from __future__ import annotations

import dataclasses
import gc
import hashlib
import json
import math
import multiprocessing as mp
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from biolab import __version__
from biolab.config import from_dict
from biolab.data.biod import (
    BioDConfig,
    biod_bits,
    chunk_vocabularies,
    render_biod,
    sample_values,
    value_texts,
)
from biolab.data.bios import (
    Bio,
    bio_rng,
    bioS_jsonl,
    bios_jsonl,
    check_reverse,
    entries_per_person,
    plan_bios_bioS,
    render_bios_bioR,
    render_bios_bioS,
)
from biolab.data.llm_bios import (
    LLM_STYLE,
    BioCache,
    Generate,
    GenerationProgress,
    LLMBioWriter,
    LLMConfig,
    default_cache_dir,
    load_instructions,
)
from biolab.data.llm_engines import check_model_folder, load_generator
from biolab.data.people import (
    ATTRIBUTES,
    CELEBRITY,
    DAYS,
    GROUPS,
    MINORITY,
    MONTHS,
    PRONOUNS,
    YEARS,
    Person,
    people_jsonl,
    sample_groups,
    sample_people,
)
from biolab.data.pools import Pools, limit_values, load_pools
from biolab.data.qa import QA, qa_jsonl, qa_pairs
from biolab.data.templates import STYLES, load_templates
from biolab.errors import ConfigError, DataFileError
from biolab.io import atomic_dir, write_json

FORMAT_VERSION = 1
BIOD = "bioD"  # data.style of Part 3.3's bioD (biolab.data.biod); bioS and bioR have templates
NO_TEMPLATES = (BIOD, LLM_STYLE)  # bioR_llm: bios written by a local LLM (biolab.data.llm_bios)
FILES = ("people.jsonl", "bios.jsonl", "qa.jsonl")
DATASET_ENTRIES = (*FILES, "meta.json")  # all a dataset folder holds
# Chunks are fixed in size and seeded by their index, so the bytes do not depend on `workers`.
CHUNK = 2048
# The celebrities' chunks are numbered from here: far above any minority chunk (at most
# pools.n_names / CHUNK of them), so no chunk random stream of one group is the other's.
CELEBRITY_CHUNKS = 1 << 40
# Result 6's keys: left out of to_dict while n_celebrities == 0 (see DataConfig.to_dict).
CELEBRITY_KEYS = (
    "n_celebrities", "celebrity_style", "celebrity_multi", "celebrity_permute", "celebrity_fullname",
)  # fmt: skip


@contextmanager
def _gc_paused():
    """No cyclic garbage collection while generating: generation makes next to no cyclic garbage, but
    millions of objects that each full collection walks again (with the people): it tripled the time
    of rendering bios."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


@dataclass(frozen=True)
class DataConfig:
    """What a dataset is; ``conf/data/*.yaml`` presets fill it."""

    name: str = "bioS_single"
    style: str = "bioS"
    n_people: int = 100_000  # half P_train, half P_test; with an odd count P_test has one more
    seed: int = 0
    multi: int = 1  # M template draws per person (multiM)
    permute: int = 0  # 0: fixed order; P: each draw in P shuffled sentence orders
    fullname: bool = False  # the full name in every sentence instead of the pronoun
    couple: bool = False  # permute the three attribute pairs instead of single sentences
    reverse: int = 0  # Part 3.2: 0 off; r = 1..5 the name in sentence r+1; 6 a closing name sentence
    group: str = "main"
    merge_prob: float = 0.7  # bioR: chance an attribute pair shares one sentence
    max_fillers: int = 1  # bioR: 0..max neutral sentences per entry
    connective_prob: float = 0.3  # bioR: chance of "Later," etc. before a sentence
    pools: str | None = None  # a folder of custom pools (default: the paper's)
    templates: str | None = None  # a folder of custom templates (default: the package's)
    max_values: int = 0  # keep this many values per attribute pool (0: all); for small probing runs
    # Result 6 (celebrities help minorities): n_celebrities > 0 adds that many celebrities (split
    # train) in their own format; the n_people, rendered as above, become the minority (split test).
    n_celebrities: int = 0
    celebrity_style: str = "bioS"
    celebrity_multi: int = 5
    celebrity_permute: int = 1  # multi5+permute: 5 entries, each in its own shuffled order
    celebrity_fullname: bool = False
    biod: dict | None = None  # style bioD (Part 3.3): {K, C, D, L, T}, biolab.data.biod.BioDConfig
    llm: dict | None = None  # style bioR_llm: {model, attempts, ...}, biolab.data.llm_bios.LLMConfig

    @classmethod
    def from_dict(cls, d: dict) -> DataConfig:
        return from_dict(cls, d, "data")

    def validate(self) -> None:
        if self.style not in (*STYLES, *NO_TEMPLATES):
            raise ConfigError(f"data.style must be one of {(*STYLES, *NO_TEMPLATES)}, got {self.style!r}")
        if self.style == BIOD:
            self._validate_biod()
        elif self.biod is not None:
            raise ConfigError(f"data.biod is for data.style={BIOD}, not {self.style}")
        if self.style == LLM_STYLE:
            self._validate_llm()
        elif self.llm is not None:
            raise ConfigError(f"data.llm is for data.style={LLM_STYLE}, not {self.style}")
        if self.n_people < 2:
            raise ConfigError(f"data.n_people must be >= 2, got {self.n_people}")
        if self.multi < 1:
            raise ConfigError(f"data.multi must be >= 1, got {self.multi}")
        if self.permute < 0:
            raise ConfigError(f"data.permute must be >= 0, got {self.permute}")
        if self.couple and self.permute < 1:
            raise ConfigError("data.couple shuffles attribute pairs: it needs data.permute >= 1")
        if self.style in ("bioR", LLM_STYLE) and (self.permute or self.couple):
            raise ConfigError("bioR entries already vary their order: use permute=0, couple=false")
        check_reverse(self.reverse, self.fullname)
        if self.reverse and self.style != "bioS":
            raise ConfigError("data.reverse is a bioS augmentation (bioR bios open with the name)")
        for k in ("merge_prob", "connective_prob"):
            if not 0 <= getattr(self, k) <= 1:
                raise ConfigError(f"data.{k} must be in [0, 1], got {getattr(self, k)}")
        if self.max_fillers < 0:
            raise ConfigError(f"data.max_fillers must be >= 0, got {self.max_fillers}")
        if self.max_values == 1 or self.max_values < 0:
            raise ConfigError(f"data.max_values must be 0 (all values) or >= 2, got {self.max_values}")
        if self.n_celebrities < 0:
            raise ConfigError(f"data.n_celebrities must be >= 0, got {self.n_celebrities}")
        if self.n_celebrities:
            self._validate_celebrities()

    def check_inputs(self) -> None:
        """What ``validate`` leaves to the machine that writes the dataset (a written dataset's config
        stays loadable where they are not): bioR_llm's model folder, engine and instruction pool."""
        if self.style == LLM_STYLE:
            llm = LLMConfig.from_dict(self.llm)
            check_model_folder(llm)
            load_instructions(llm.instructions)

    def _validate_biod(self) -> None:
        BioDConfig.from_dict(self.biod)
        fixed = ("permute", "fullname", "couple", "reverse", "n_celebrities", "max_values", "templates")
        for k in fixed:
            if getattr(self, k):
                raise ConfigError(f"data.{k} is not a bioD option (one fixed template, random order)")

    def _validate_llm(self) -> None:
        if self.llm is None:
            raise ConfigError(f"data.style={LLM_STYLE} needs a data.llm section (its model: a local folder)")
        LLMConfig.from_dict(self.llm)
        for k in ("fullname", "n_celebrities", "templates"):
            if getattr(self, k):
                raise ConfigError(f"data.{k} is not a {LLM_STYLE} option (the model writes each bio)")

    def _validate_celebrities(self) -> None:
        if self.celebrity_style == LLM_STYLE:
            raise ConfigError(f"data.celebrity_style={LLM_STYLE} is not supported: celebrities use templates")
        for k in ("reverse", "couple"):
            if getattr(self, k):
                raise ConfigError(f"data.{k} is not supported with celebrities (data.n_celebrities > 0)")
        if self.group != "main":
            raise ConfigError(
                f"data.group must stay 'main' with celebrities: the groups are {GROUPS}, got {self.group!r}"
            )
        try:
            self.celebrity_config().validate()
        except ConfigError as err:
            # the same rules as the main format; the message names the celebrity keys
            msg = str(err).replace("data.", "data.celebrity_")
            raise ConfigError(f"data.celebrity_* (the celebrities' format): {msg}") from None

    def celebrity_config(self) -> DataConfig:
        """The celebrities' format as a config of its own: this one with style, multi, permute and
        fullname replaced and no celebrities (render_chunk and the bioS fast path take it as is)."""
        return dataclasses.replace(
            self, style=self.celebrity_style, multi=self.celebrity_multi, permute=self.celebrity_permute,
            fullname=self.celebrity_fullname, n_celebrities=0,
        )  # fmt: skip

    @property
    def entries_per_person(self) -> int:
        """Bios per person of the main format (with celebrities: the minority's)."""
        return entries_per_person(self.multi, self.permute)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        if not self.reverse:
            # reverse came after format 1: leaving it out at its default keeps the meta.json of
            # every earlier dataset, and the data configs compared by prepare_corpus, unchanged
            del d["reverse"]
        if not self.max_values:
            del d["max_values"]  # the same reason
        if not self.n_celebrities:
            for k in CELEBRITY_KEYS:  # the same reason
                del d[k]
        if self.biod is None:
            del d["biod"]  # the same reason
        if self.llm is None:
            del d["llm"]  # the same reason
        return d


def load_sources(cfg: DataConfig) -> tuple[Pools, object]:
    """Pools and templates for ``cfg``; checks the population fits the name space."""
    pools = load_pools(cfg.pools, check_sizes=cfg.pools is None)
    if cfg.max_values:
        pools = limit_values(pools, cfg.max_values)
    if cfg.n_people > pools.n_names:
        raise ConfigError(f"data.n_people={cfg.n_people} exceeds the {pools.n_names} distinct full names")
    if cfg.n_people + cfg.n_celebrities > pools.n_names:
        raise ConfigError(
            f"data.n_people + data.n_celebrities = {cfg.n_people + cfg.n_celebrities} exceeds the "
            f"{pools.n_names} distinct full names"
        )
    return pools, None if cfg.style in NO_TEMPLATES else load_templates(cfg.style, cfg.templates)


def render_chunk(cfg: DataConfig, people: list[Person], chunk: int, templates=None) -> list[Bio]:
    """The bios of one chunk of people (chunk index fixes the random stream)."""
    if templates is None:
        templates = load_templates(cfg.style, cfg.templates)
    rng = bio_rng(cfg.seed, chunk)
    if cfg.style == "bioS":
        return render_bios_bioS(
            people, templates, rng, cfg.multi, cfg.permute, cfg.fullname, cfg.couple, cfg.reverse
        )
    return render_bios_bioR(
        people, templates, rng, cfg.multi, cfg.fullname,
        cfg.merge_prob, cfg.max_fillers, cfg.connective_prob,
    )  # fmt: skip


def _chunks(people: list[Person], first: int = 0) -> list[tuple[int, list[Person]]]:
    return [(first + c, people[s : s + CHUNK]) for c, s in enumerate(range(0, len(people), CHUNK))]


def _sample(cfg: DataConfig, pools: Pools) -> list[Person]:
    if cfg.n_celebrities:
        return sample_groups(cfg.n_people, cfg.n_celebrities, cfg.seed, pools)
    return sample_people(cfg.n_people, cfg.seed, pools, cfg.group)


def _parts(cfg: DataConfig, people: list[Person], templates) -> list[tuple]:
    """(group, format, people, templates, first chunk index) of each group, in file order: the
    minority (or the only group) exactly as without celebrities, then the celebrities."""
    if not cfg.n_celebrities:
        return [(cfg.group, cfg, people, templates, 0)]
    cel = cfg.celebrity_config()
    cel_templates = templates if cel.style == cfg.style else load_templates(cel.style, cel.templates)
    n = cfg.n_people
    return [
        (MINORITY, cfg, people[:n], templates, 0),
        (CELEBRITY, cel, people[n:], cel_templates, CELEBRITY_CHUNKS),
    ]


@dataclass
class Dataset:
    """An in-memory dataset (small sizes, tests and notebooks)."""

    config: DataConfig
    people: list[Person]
    bios: list[Bio]
    qa: list = field(default_factory=list)


def generate(cfg: DataConfig) -> Dataset:
    """Everything in memory, single process; the same bytes as ``write_dataset``."""
    if cfg.style == LLM_STYLE:
        raise ConfigError(f"data.style={LLM_STYLE} is written by write_dataset (a model and a bio cache)")
    pools, templates = load_sources(cfg)
    people = _sample(cfg, pools)
    bios = [
        b
        for _, fmt, group, ts, first in _parts(cfg, people, templates)
        for c, ps in _chunks(group, first)
        for b in render_chunk(fmt, ps, c, ts)
    ]
    return Dataset(cfg, people, bios, [q for p in people for q in qa_pairs(p)])


def _chunk_job(args) -> tuple[str, list[int], list[int]]:
    """A chunk's bios.jsonl text and each bio's length in characters and words."""
    cfg, chunk, people, templates = args
    if cfg.style != "bioS":
        return bios_jsonl(render_chunk(cfg, people, chunk, templates))
    rng = bio_rng(cfg.seed, chunk)
    plan = plan_bios_bioS(
        people, templates, rng, cfg.multi, cfg.permute, cfg.fullname, cfg.couple, cfg.reverse
    )
    return bioS_jsonl(people, plan)


def bits_per_person(cfg: DataConfig, pools: Pools) -> dict:
    """Knowledge per person at zero loss (paper 1.2 / Part 3.3): log2 of each choice."""
    per = {
        "birth_date": math.log2((YEARS[1] - YEARS[0] + 1) * len(MONTHS) * DAYS),
        "birth_city": math.log2(len(pools.city)),
        "university": math.log2(len(pools.university)),
        "major": math.log2(len(pools.major)),
        "company": math.log2(len(pools.company)),
        "company_city": 0.0,  # a function of the company
        "pronoun": math.log2(len(PRONOUNS)),
    }
    attrs = sum(per.values())
    name = math.log2(pools.n_names / (cfg.n_people + cfg.n_celebrities))  # every name the data holds
    return {
        "per_attribute": {k: round(v, 4) for k, v in per.items()},
        "attributes": round(attrs, 4),
        "name": round(name, 4),
        "total": round(attrs + name, 4),
        "note": "paper's S0 counts 2 genders (47.6 bits); we draw 3 pronouns",
    }


def _length_stats(xs: list[int]) -> dict:
    a = np.asarray(xs)
    return {
        "mean": round(float(a.mean()), 2),
        "std": round(float(a.std()), 2),
        "min": int(a.min()),
        "p50": float(np.median(a)),
        "max": int(a.max()),
    }


def write_dataset(
    cfg: DataConfig, out: str | Path, overwrite: bool = False, workers: int = 1,
    progress: bool = True, timings: dict | None = None, llm_generate: Generate | None = None,
    llm_cache: str | Path | None = None,
) -> dict:  # fmt: skip
    """Generate and write the dataset folder atomically; return its meta.json content. ``timings``
    gets the seconds of each part: sampling the people, each file (``encode_sha256_write``: the part
    of the three .jsonl files' seconds spent encoding, hashing and writing).

    Style bioR_llm: ``llm_generate`` writes the bios (default: ``data.llm.model``, loaded at the first
    bio the cache lacks), ``llm_cache`` is the folder of accepted bios a killed run resumes from
    (default: ``.<out>.llm-cache`` beside ``out``), removed once the dataset is in place; ``workers``
    does not apply (the model is one)."""
    cfg.validate()
    if workers < 1:
        raise ConfigError(f"workers must be >= 1, got {workers}")
    if cfg.style == LLM_STYLE and llm_generate is None:
        cfg.check_inputs()
    elif cfg.style == LLM_STYLE:
        load_instructions(LLMConfig.from_dict(cfg.llm).instructions)
    check_replaceable(out, overwrite)
    pools, templates = load_sources(cfg)
    if cfg.style == BIOD:
        return _write_biod(cfg, pools, out, overwrite)
    timings = {} if timings is None else timings
    timings["encode_sha256_write"] = 0.0
    clock = time.perf_counter()
    llm_cache = Path(llm_cache) if llm_cache is not None else default_cache_dir(out)
    # a model's calls make cyclic garbage that holds device memory: collect it while a model writes
    no_gc = nullcontext() if cfg.style == LLM_STYLE else _gc_paused()
    with atomic_dir(out, overwrite) as tmp, no_gc:
        people = _sample(cfg, pools)
        digests = {f: hashlib.sha256() for f in FILES}

        def emit(f, fh, text):
            start = time.perf_counter()
            data = text.encode("utf-8")
            digests[f].update(data)
            fh.write(data)
            timings["encode_sha256_write"] += time.perf_counter() - start

        def lap(part):
            nonlocal clock
            timings[part], clock = time.perf_counter() - clock, time.perf_counter()

        lap("sample_people")
        with open(tmp / "people.jsonl", "wb") as f:
            for s in range(0, len(people), CHUNK):
                emit("people.jsonl", f, people_jsonl(people[s : s + CHUNK]))
        lap("people.jsonl")
        n_qa = len(people) * len(ATTRIBUTES)
        with open(tmp / "qa.jsonl", "wb") as f:
            for s in range(0, len(people), CHUNK):
                emit("qa.jsonl", f, qa_jsonl(people[s : s + CHUNK]))
        lap("qa.jsonl")
        chars: list[int] = []
        words: list[int] = []
        parts = _parts(cfg, people, templates)
        jobs = [(fmt, c, ps, ts) for _, fmt, group, ts, first in parts for c, ps in _chunks(group, first)]
        job_group = [g for g, _, group, _, first in parts for _ in _chunks(group, first)]
        group_bios = dict.fromkeys((g for g, *_ in parts), 0)
        bar = tqdm(total=len(people), desc=f"bios {cfg.name}", unit="people", disable=not progress)
        llm_writer = _llm_writer(cfg, llm_generate, llm_cache, progress) if cfg.style == LLM_STYLE else None
        with open(tmp / "bios.jsonl", "wb") as f:
            if llm_writer is not None:
                results = (bios_jsonl(llm_writer.bios(ps)) for _, _, ps, _ in jobs)
                pool = None
            elif workers == 1:
                results = map(_chunk_job, jobs)
                pool = None
            else:
                pool = mp.get_context("fork").Pool(workers)
                results = pool.imap(_chunk_job, jobs)  # ordered: same bytes as one worker
            try:
                for (_, _, ps, _), g, (text, c, w) in zip(jobs, job_group, results, strict=True):
                    emit("bios.jsonl", f, text)
                    chars += c
                    words += w
                    group_bios[g] += len(c)
                    bar.update(len(ps))
            finally:
                if pool is not None:
                    pool.terminate()
        bar.close()
        lap("bios.jsonl")
        n_train = sum(p.split == "train" for p in people)
        counts = {
            "people": len(people),
            "train": n_train,
            "test": len(people) - n_train,
            "bios": len(chars),
            "entries_per_person": cfg.entries_per_person,  # with celebrities: the minority's
            "qa": n_qa,
        }
        if cfg.n_celebrities:
            by_group = {g: (fmt, group) for g, fmt, group, *_ in parts}
            counts["groups"] = {
                g: {"people": len(by_group[g][1]), "bios": group_bios[g],
                    "entries_per_person": by_group[g][0].entries_per_person}
                for g in GROUPS
            }  # fmt: skip
        meta = {
            "format_version": FORMAT_VERSION,
            "biolab_version": __version__,
            "config": cfg.to_dict(),
            "attributes": list(ATTRIBUTES),
            "counts": counts,
            "bits_per_person": bits_per_person(cfg, pools),
            "bio_length": {"chars": _length_stats(chars), "words": _length_stats(words)},
            "sha256": {f: d.hexdigest() for f, d in digests.items()},
        }
        if llm_writer is not None:
            meta["llm"] = llm_writer.summary()
        write_json(tmp / "meta.json", meta)  # written last: its presence marks completeness
        lap("meta.json")
    if llm_writer is not None:
        shutil.rmtree(llm_cache, ignore_errors=True)  # the dataset holds every bio now
    return meta


def _llm_writer(cfg: DataConfig, llm_generate: Generate | None, cache: Path, progress: bool) -> LLMBioWriter:
    llm = LLMConfig.from_dict(cfg.llm)
    return LLMBioWriter(
        llm, cfg.seed, cfg.multi, BioCache(cache, cfg.to_dict()),
        (lambda: llm_generate) if llm_generate is not None else (lambda: load_generator(llm)),
        GenerationProgress(cfg.n_people * cfg.multi, show=progress),
    )  # fmt: skip


def check_replaceable(out: str | Path, overwrite: bool) -> None:
    """``overwrite`` replaces a dataset folder and nothing else: a non-empty ``out`` that holds
    anything but a dataset's own files (a run, a stage root, a user's thesis) is refused before any
    work, naming what it holds. Without ``overwrite``, atomic_dir refuses any non-empty ``out``."""
    out = Path(out)
    if not overwrite or not out.is_dir():
        return
    names = sorted(p.name for p in out.iterdir())
    other = [n for n in names if n not in DATASET_ENTRIES]
    if not names or (not other and _is_dataset(out)):
        return
    found = ", ".join(repr(n) for n in (other or names)[:3]) + (" ..." if len(other or names) > 3 else "")
    marker = "" if (out / "meta.json").is_file() else "no meta.json; "
    raise ConfigError(
        f"out={out} is not a dataset folder ({marker}it holds {found}); overwrite=true only replaces "
        "a dataset folder: use a new out"
    )


def _is_dataset(directory: Path) -> bool:
    try:
        read_meta(directory)
    except (OSError, ValueError):  # DataFileError is a ValueError
        return False
    return True


def _write_biod(cfg: DataConfig, pools: Pools, out: str | Path, overwrite: bool) -> dict:
    """A bioD dataset folder: the same four files, its K attributes in place of the six."""
    b = BioDConfig.from_dict(cfg.biod)
    people = sample_people(cfg.n_people, cfg.seed, pools, cfg.group)
    vocab = chunk_vocabularies(b, cfg.seed)
    texts = value_texts(b, vocab, sample_values(b, len(people), cfg.seed))
    attrs = b.attributes()
    rows = [{"id": p.id, "full_name": p.full_name, "first_name": p.first_name, "middle_name": p.middle_name,
             "last_name": p.last_name, "split": p.split, "group": p.group, **dict(zip(attrs, t, strict=True))}
            for p, t in zip(people, texts, strict=True)]  # fmt: skip
    qas = [{"person_id": p.id, "attribute": a, "question": f"What is {p.full_name}'s {a}?", "answer": v,
            "split": p.split}
           for p, t in zip(people, texts, strict=True) for a, v in zip(attrs, t, strict=True)]  # fmt: skip
    bios = render_biod(people, texts, b, cfg.multi, cfg.seed)
    files = {
        "people.jsonl": "".join(json.dumps(r) + "\n" for r in rows),
        "qa.jsonl": "".join(json.dumps(q) + "\n" for q in qas),
        "bios.jsonl": "".join(x.to_json() + "\n" for x in bios),
    }
    with atomic_dir(out, overwrite) as tmp:
        for name, text in files.items():
            (tmp / name).write_text(text, encoding="utf-8")
        n_train = sum(p.split == "train" for p in people)
        meta = {
            "format_version": FORMAT_VERSION, "biolab_version": __version__, "config": cfg.to_dict(),
            "attributes": attrs,
            "counts": {"people": len(people), "train": n_train, "test": len(people) - n_train,
                       "bios": len(bios), "entries_per_person": cfg.multi, "qa": len(qas)},
            "bits_per_person": biod_bits(b, len(people), pools.n_names),
            "bio_length": {"chars": _length_stats([len(x.text) for x in bios]),
                           "words": _length_stats([len(x.text.split()) for x in bios])},
            "sha256": {f: hashlib.sha256(t.encode("utf-8")).hexdigest() for f, t in files.items()},
        }  # fmt: skip
        write_json(tmp / "meta.json", meta)
    return meta


def read_meta(directory: str | Path) -> dict:
    directory = Path(directory)
    path = directory / "meta.json"
    if not path.is_file():
        raise DataFileError(f"{directory}: not a biolab dataset (no meta.json)")
    meta = json.loads(path.read_text(encoding="utf-8"))
    if meta.get("format_version") != FORMAT_VERSION:
        raise DataFileError(f"{path}: format_version {meta.get('format_version')} unsupported")
    return meta


def iter_jsonl(path: str | Path) -> Iterator[dict]:
    with open(path, encoding="utf-8") as f:
        for line in f:
            yield json.loads(line)


def verify_dataset(directory: str | Path) -> dict:
    """Check every file against the sha256 in meta.json; return meta."""
    directory = Path(directory)
    meta = read_meta(directory)
    for name, want in meta["sha256"].items():
        h = hashlib.sha256()
        with open(directory / name, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        if h.hexdigest() != want:
            raise DataFileError(f"{directory / name}: sha256 mismatch (file changed or truncated)")
    return meta


def load_dataset(directory: str | Path, verify: bool = False) -> Dataset:
    """Load a dataset folder into memory (for small datasets; stream bios with iter_jsonl)."""
    directory = Path(directory)
    meta = verify_dataset(directory) if verify else read_meta(directory)
    if meta["config"].get("style") == "bioD":  # its people hold K chunk values, not Person's six
        raise DataFileError(
            f"{directory}: a bioD dataset has no Person records; read its files with iter_jsonl "
            "(people.jsonl holds each attribute's value under its name)"
        )
    cfg = DataConfig.from_dict(meta["config"])
    people = [Person(**d) for d in iter_jsonl(directory / "people.jsonl")]
    bios = [Bio(**d) for d in iter_jsonl(directory / "bios.jsonl")]
    qa = [QA(**d) for d in iter_jsonl(directory / "qa.jsonl")]
    return Dataset(cfg, people, bios, qa)
