"""bioR written by a local LLM (biolab/data/llm_bios.py and llm_engines.py, data.style=bioR_llm):
prompts, spans, rejection, rewrites, the resumable cache, determinism and config errors with a scripted
model; the transformers path end to end with a tiny random model built here (nothing downloaded)."""

import hashlib
import json
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from biolab.cli import check_overrides, compose
from biolab.data.check import check_dataset
from biolab.data.dataset import DataConfig, generate, load_dataset, write_dataset
from biolab.data.llm_bios import (
    LLMConfig,
    Prompt,
    bio_spans,
    build_prompt,
    default_cache_dir,
    finish_bio,
    load_instructions,
    request_plan,
    sampling_seed,
)
from biolab.data.llm_engines import TransformersGenerator, prompt_ids, top_p_sample, vllm_usable
from biolab.data.people import ATTRIBUTES, Person, sample_people
from biolab.data.pools import load_pools
from biolab.errors import ConfigError, DataFileError, GenerationError

FILES = ("people.jsonl", "bios.jsonl", "qa.jsonl", "meta.json")


def facts_of(prompt: Prompt) -> list[str]:
    """The six values a prompt lists, in its order."""
    lines = [line[2:] for line in prompt.message.splitlines() if line.startswith("- ")]
    return [line.split(": ", 1)[1] for line in lines if not line.startswith("Pronouns")]


class ScriptedModel:
    """A model that answers from the facts in its prompt, worded by the seed; the first ``drop``
    tries of each request leave out its last fact. ``calls`` logs (opening, seed) of every try."""

    def __init__(self, drop: int = 0, fail_at_call: int | None = None):
        self.drop, self.fail_at_call = drop, fail_at_call
        self.calls: list[tuple[str, int]] = []
        self.batches = 0
        self.tries: dict[str, int] = {}

    def __call__(self, prompts, seeds):
        if self.fail_at_call is not None and self.batches == self.fail_at_call:
            raise KeyboardInterrupt  # a kill in the middle of the generation
        self.batches += 1
        out = []
        for prompt, seed in zip(prompts, seeds, strict=True):
            self.calls.append((prompt.opening, seed))
            facts = facts_of(prompt)
            tried = self.tries.get(prompt.message, 0)
            self.tries[prompt.message] = tried + 1
            if tried < self.drop:
                facts = facts[:-1]
            told = ". Then ".join(f"fact {k}: {v}" for k, v in enumerate(facts))
            out.append(f" (draw {seed % 997}) has these facts.\n Then {told}. And a cut off sen")
        return out


def llm_config(**kw) -> DataConfig:
    llm = {"model": "/nowhere", "batch_size": 4, **kw.pop("llm", {})}
    return DataConfig(**{"name": "llm", "style": "bioR_llm", "n_people": 6, "llm": llm, **kw})


def write(cfg: DataConfig, out: Path, model, **kw) -> dict:
    return write_dataset(cfg, out, progress=False, llm_generate=model, **kw)


def digests(folder: Path) -> dict[str, str]:
    return {f: hashlib.sha256((folder / f).read_bytes()).hexdigest() for f in FILES}


def person(**kw) -> Person:
    values = {
        "id": 7, "first_name": "Ann", "middle_name": "Lee", "last_name": "Law", "full_name": "Ann Lee Law",
        "pronoun": "she", "birth_date": "May 3, 1950", "birth_city": "Austin, TX",
        "university": "University of Law", "major": "Law", "company": "Dow Inc.",
        "company_city": "Austin, TX", "split": "train",
    }  # fmt: skip
    return Person(**{**values, **kw})


# --- prompts, text and spans


def test_the_instruction_pool_is_ours_varied_and_names_the_person():
    pool = load_instructions()
    assert len(pool) >= 20 and len(set(pool)) == len(pool)
    assert all(line.count("{name}") == 1 for line in pool)


def test_a_prompt_gives_the_name_every_value_and_the_pronoun_and_opens_the_answer_with_the_name():
    p = person()
    index, order = request_plan(0, p.id, 0, len(load_instructions()))
    prompt = build_prompt(p, load_instructions()[index], order)
    assert prompt.opening == p.full_name and p.full_name in prompt.message
    assert sorted(facts_of(prompt)) == sorted(p.value(a) for a in ATTRIBUTES)
    assert "she/her" in prompt.message
    assert request_plan(0, p.id, 0, 20) == request_plan(0, p.id, 0, 20)
    assert len({str(request_plan(0, p.id, r, 20)) for r in range(8)}) > 1  # rewrites vary


def test_each_try_has_its_own_seed():
    seeds = {sampling_seed(s, i, r, a) for s in (0, 1) for i in (0, 1) for r in (0, 1) for a in (0, 1)}
    assert len(seeds) == 16 and all(0 <= x < 2**32 for x in seeds)
    assert sampling_seed(0, 3, 1, 2) == sampling_seed(0, 3, 1, 2)


def test_a_bio_is_one_paragraph_on_one_line_cut_after_its_last_sentence():
    assert finish_bio("Ann Lee", " was  born\nin May.\n\nNote: more.") == "Ann Lee was born in May."
    assert finish_bio("Ann Lee", " works at Dow Inc. and lik") == "Ann Lee works at Dow Inc."
    assert finish_bio("Ann Lee", " no end") == "Ann Lee no end"


def test_spans_take_each_value_where_it_stands_alone_outside_the_name_and_longer_values():
    p = person()
    text = (
        "Ann Lee Law, born May 3, 1950 in Austin, TX, studied Law at University of Law. "
        "She works for Dow Inc. in Austin, TX. Ann Lee Law is well liked."
    )
    spans, missing = bio_spans(text, p)
    assert missing == []
    assert list(spans) == [*ATTRIBUTES, "name"]
    assert all(text[slice(*spans[a])] == p.value(a) for a in ATTRIBUTES)
    assert spans["major"][0] == text.index("Law at")  # not the name's "Law", not inside the university
    assert spans["birth_city"] != spans["company_city"]  # two mentions: one each
    assert spans["name"] == [[0, 11], [text.rindex("Ann"), text.rindex("Ann") + 11]]


def test_a_value_said_once_for_two_attributes_shares_its_span_and_a_missing_value_is_named():
    p = person()
    spans, missing = bio_spans("Ann Lee Law, born May 3, 1950 in Austin, TX, works for Dow Inc.", p)
    assert spans["birth_city"] == spans["company_city"]
    assert missing == ["university", "major"]  # "Law" only in the name
    assert bio_spans("She studied Law.", p)[1][-1] == "name"


def test_top_p_sampling_draws_by_inverse_cdf_within_the_nucleus():
    import torch

    logits = torch.log(torch.tensor([[0.1, 0.6, 0.3], [0.1, 0.6, 0.3]]))
    u = torch.tensor([0.0, 0.99], dtype=torch.float64)
    assert top_p_sample(logits, u, 1.0, 1.0).tolist() == [1, 0]
    assert top_p_sample(logits, u, 1.0, 0.5).tolist() == [1, 1]  # the nucleus is the top token
    assert top_p_sample(logits, u, 1.0, 0.8).tolist() == [1, 2]


# --- writing a dataset with a scripted model


def test_a_written_dataset_holds_multi_accepted_rewrites_with_exact_spans(tmp_path):
    model = ScriptedModel()
    meta = write(llm_config(multi=3), tmp_path / "d", model)
    problems, stats = check_dataset(tmp_path / "d")
    assert problems == [] and stats["bios"] == 18
    data = load_dataset(tmp_path / "d")
    people = {p.id: p for p in data.people}
    for bio in data.bios:
        p = people[bio.person_id]
        assert bio.text.startswith(p.full_name) and bio.text.endswith(".") and "\n" not in bio.text
        assert all(bio.text[slice(*bio.spans[a])] == p.value(a) for a in ATTRIBUTES)
        assert "cut off" not in bio.text
    assert [(b.person_id, b.entry) for b in data.bios] == [(i, r) for i in range(6) for r in range(3)]
    assert len({b.text for b in data.bios}) == 18  # rewrites differ
    assert meta["counts"]["entries_per_person"] == 3 and meta["config"]["llm"]["model"] == "/nowhere"
    assert meta["llm"] == {"instructions": len(load_instructions()), "tries_per_bio": {"1": 18}}
    assert len(model.calls) == 18
    assert not default_cache_dir(tmp_path / "d").exists()  # the dataset holds every bio now


def test_a_rejected_bio_is_asked_again_with_a_new_seed(tmp_path, capsys):
    model = ScriptedModel(drop=2)
    meta = write_dataset(llm_config(), tmp_path / "d", llm_generate=model)
    assert meta["llm"]["tries_per_bio"] == {"3": 6}
    assert len(model.calls) == 18 and len(set(model.calls)) == 18
    assert check_dataset(tmp_path / "d")[0] == []
    lines = [x for x in capsys.readouterr().out.splitlines() if x.startswith("bioR_llm: 6/6 bios")]
    assert lines and "bios/s" in lines[0] and "3.00 tries per bio" in lines[0] and "ETA" in lines[0]


def test_a_bio_still_rejected_after_its_attempts_stops_the_run_naming_the_person(tmp_path):
    cfg = llm_config(llm={"attempts": 3})
    with pytest.raises(GenerationError) as err:
        write(cfg, tmp_path / "d", ScriptedModel(drop=99))
    name = sample_people(6, 0, load_pools())[0].full_name
    msg = str(err.value)
    assert "\n" not in msg and f"person 0 ({name}), rewrite 0" in msg and "in 3 tries" in msg
    assert "data.llm.attempts" in msg and "the last lacked " in msg
    assert not (tmp_path / "d").exists()


def test_a_killed_generation_resumes_asking_the_model_only_for_the_rest(tmp_path):
    cfg = llm_config(multi=2)  # 12 bios, batches of 4: two people a batch
    whole = tmp_path / "whole"
    write(cfg, whole, ScriptedModel())
    out = tmp_path / "d"
    with pytest.raises(KeyboardInterrupt):
        write(cfg, out, ScriptedModel(fail_at_call=2))  # killed after people 0-3
    cache = default_cache_dir(out) / "bios.jsonl"
    held = [json.loads(line) for line in cache.read_text().splitlines()]
    assert [(r["person_id"], r["entry"]) for r in held] == [(i, r) for i in range(4) for r in range(2)]
    with open(cache, "a") as f:
        f.write('{"person_id": 4, "entry": 0, "te')  # a kill in the middle of an append
    model = ScriptedModel()
    write(cfg, out, model)
    names = {json.loads(line)["id"]: json.loads(line)["full_name"] for line in open(out / "people.jsonl")}
    assert {o for o, _ in model.calls} == {names[4], names[5]} and len(model.calls) == 4
    assert digests(out) == digests(whole)


def test_a_fully_cached_run_never_loads_the_model(tmp_path, monkeypatch):
    cfg = llm_config()
    cache = tmp_path / "cache"

    def killed(path, obj):
        raise KeyboardInterrupt  # killed while writing meta.json, every bio done

    with monkeypatch.context() as m:
        m.setattr("biolab.data.dataset.write_json", killed)
        with pytest.raises(KeyboardInterrupt):
            write(cfg, tmp_path / "d", ScriptedModel(), llm_cache=cache)
    assert len((cache / "bios.jsonl").read_text().splitlines()) == 6 and not (tmp_path / "d").exists()

    def no_model(prompts, seeds):
        raise AssertionError("the model was asked")

    write(cfg, tmp_path / "d", no_model, llm_cache=cache)
    assert check_dataset(tmp_path / "d")[0] == [] and not cache.exists()


def test_a_cache_made_for_another_config_is_refused_but_more_tries_reuse_it(tmp_path):
    cache = tmp_path / "cache"
    with pytest.raises(KeyboardInterrupt):
        write(llm_config(), tmp_path / "d", ScriptedModel(fail_at_call=1), llm_cache=cache)
    with pytest.raises(ConfigError, match=r"made for another data config \(differs in llm.top_p\)"):
        write(llm_config(llm={"top_p": 0.5}), tmp_path / "d", ScriptedModel(), llm_cache=cache)
    more_tries = ScriptedModel()  # neither more tries nor another name changes a bio: the cache holds
    write(llm_config(llm={"attempts": 20}, name="renamed"), tmp_path / "d", more_tries, llm_cache=cache)
    assert len(more_tries.calls) == 2


def test_a_torn_cache_line_elsewhere_is_a_one_line_error(tmp_path):
    cache = tmp_path / "cache"
    with pytest.raises(KeyboardInterrupt):
        write(llm_config(), tmp_path / "d", ScriptedModel(fail_at_call=1), llm_cache=cache)
    (cache / "bios.jsonl").write_text("not json\n")
    with pytest.raises(DataFileError, match=r"bios.jsonl:1: not a JSON line"):
        write(llm_config(), tmp_path / "d", ScriptedModel(), llm_cache=cache)


def test_the_same_seed_gives_the_same_bytes_and_another_seed_other_bios(tmp_path):
    for name in ("a", "b"):
        write(llm_config(multi=2), tmp_path / name, ScriptedModel(drop=1))
    write(llm_config(multi=2, seed=1), tmp_path / "c", ScriptedModel(drop=1))
    assert digests(tmp_path / "a") == digests(tmp_path / "b")
    assert digests(tmp_path / "a")["bios.jsonl"] != digests(tmp_path / "c")["bios.jsonl"]


def test_bioR_llm_bios_are_not_made_in_memory():
    with pytest.raises(ConfigError, match="written by write_dataset"):
        generate(llm_config())


# --- config


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"llm": None}, "data.style=bioR_llm needs a data.llm section"),
        ({"style": "bioR"}, "data.llm is for data.style=bioR_llm, not bioR"),
        ({"llm": {"model": None}}, "data.llm.model is required"),
        ({"llm": {"model": "/m", "attempts": 0}}, "data.llm.attempts must be >= 1, got 0"),
        ({"llm": {"model": "/m", "batch_size": 0}}, "data.llm.batch_size must be >= 1"),
        ({"llm": {"model": "/m", "max_new_tokens": -1}}, "data.llm.max_new_tokens must be >= 1"),
        ({"llm": {"model": "/m", "temperature": 0}}, "data.llm.temperature must be > 0"),
        ({"llm": {"model": "/m", "top_p": 1.5}}, "data.llm.top_p must be in (0, 1]"),
        ({"llm": {"model": "/m", "engine": "tgi"}}, "data.llm.engine must be one of"),
        ({"llm": {"model": "/m", "dtype": "int3"}}, "data.llm.dtype must be one of"),
        ({"llm": {"model": "/m", "temp": 1}}, "unknown data.llm key(s) ['temp']"),
        ({"llm": {"model": "/m", "attempts": "8"}}, "data.llm.attempts must be int"),
        ({"permute": 1}, "bioR entries already vary their order"),
        ({"fullname": True}, "data.fullname is not a bioR_llm option"),
        ({"n_celebrities": 4}, "data.n_celebrities is not a bioR_llm option"),
        ({"templates": "/t"}, "data.templates is not a bioR_llm option"),
        ({"style": "bioS", "llm": None, "n_celebrities": 4, "celebrity_style": "bioR_llm"},
         "data.celebrity_style=bioR_llm is not supported"),
    ],
)  # fmt: skip
def test_config_errors_are_one_line(changes, message):
    d = {**llm_config().to_dict(), **changes}
    if isinstance(changes.get("llm"), dict):
        d["llm"] = changes["llm"]
    with pytest.raises(ConfigError) as err:
        DataConfig.from_dict(d)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_a_missing_model_folder_or_instructions_file_stops_before_any_work(tmp_path):
    not_a_model, a_model = tmp_path / "empty", tmp_path / "model"
    not_a_model.mkdir()
    a_model.mkdir()
    (a_model / "config.json").write_text("{}")
    cases = [
        ({"model": str(tmp_path / "none")}, "is not a folder"),
        ({"model": str(not_a_model)}, "has no config.json"),
        ({"model": str(a_model), "instructions": str(tmp_path / "none.txt")}, "no such file"),
    ]
    if not vllm_usable():
        cases.append(
            ({"model": str(a_model), "engine": "vllm"}, "data.llm.engine=vllm needs the vllm package")
        )
    for llm, message in cases:
        with pytest.raises(ConfigError, match=message):
            write_dataset(llm_config(llm=llm), tmp_path / "d", progress=False)
    bad = tmp_path / "bad.txt"
    bad.write_text("# comment\nWrite about someone.\n")
    with pytest.raises(DataFileError, match=r"bad.txt:2: an instruction names the person once"):
        write(llm_config(llm={"instructions": str(bad)}), tmp_path / "d", ScriptedModel())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.txt", "empty", "model"]


def test_the_preset_needs_a_model_and_every_other_preset_is_unchanged():
    from biolab.pipeline.plan import data_keys  # here: the pipeline is not what this file tests

    args = ["data=bioR_llm_single", "data.llm.model=/path/to/model", "out=runs/x"]
    check_overrides("generate", args)
    cfg = compose("generate", args[:2])
    data = DataConfig.from_dict(OmegaConf.to_container(cfg.data, resolve=True))
    assert data.style == "bioR_llm" and LLMConfig.from_dict(data.llm).model == "/path/to/model"
    with pytest.raises(ConfigError, match="data.llm.model is required"):
        DataConfig.from_dict(OmegaConf.to_container(compose("generate", args[:1]).data, resolve=True))
    plain = OmegaConf.to_container(compose("generate", ["data=bioR_single"]).data, resolve=True)
    assert plain["llm"] is None and "llm" not in data_keys(plain)
    assert "llm" not in DataConfig.from_dict(plain).to_dict()


# --- a tiny random model from a local folder


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    """A 2-layer GPT-2 of width 32 with a byte-level BPE tokenizer trained here on a few strings."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    folder = tmp_path_factory.mktemp("tiny_llm")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=320,
        special_tokens=["<eos>", "<pad>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator([*load_instructions(), "She was born on May 3, 1950 in Austin, TX."], trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>", pad_token="<pad>")
    tokenizer.save_pretrained(folder)
    config = GPT2Config(
        n_layer=2, n_embd=32, n_head=2, vocab_size=len(tokenizer), n_positions=512,
        eos_token_id=tokenizer.eos_token_id, bos_token_id=tokenizer.eos_token_id,
    )  # fmt: skip
    torch.manual_seed(0)
    GPT2LMHeadModel(config).save_pretrained(folder)
    return folder


def test_a_tiny_local_model_runs_end_to_end_and_its_nonsense_stops_the_run_naming_the_person(
    tiny_model, tmp_path
):
    cfg = llm_config(n_people=2, llm={"model": str(tiny_model), "attempts": 2, "max_new_tokens": 8,
                                      "batch_size": 2, "engine": "transformers"})  # fmt: skip
    with pytest.raises(GenerationError) as err:
        write_dataset(cfg, tmp_path / "d", progress=False)
    msg = str(err.value)
    assert "\n" not in msg and "person 0 (" in msg and "in 2 tries" in msg
    assert not (tmp_path / "d").exists()


def test_the_transformers_generator_samples_each_row_from_its_seed(tiny_model):
    gen = TransformersGenerator(LLMConfig(model=str(tiny_model), max_new_tokens=12, temperature=1.0), "cpu")
    prompts = [build_prompt(person(), "Write about {name}.", range(6)), Prompt("Hi.", "Ann")]
    first = gen(prompts, [1, 2])
    assert gen(prompts, [1, 2]) == first
    assert gen(prompts, [3, 4]) != first
    assert all(isinstance(t, str) for t in first)


def test_a_chat_template_frames_the_message_and_the_answer_opens_with_the_name(tiny_model):
    gen = TransformersGenerator(LLMConfig(model=str(tiny_model)), "cpu")
    prompt = Prompt("Write about Ann.", "Ann Lee Law")
    plain = gen.tokenizer.decode(prompt_ids(gen.tokenizer, prompt))
    assert plain == "Write about Ann.\n\nAnn Lee Law"
    gen.tokenizer.chat_template = "{% for m in messages %}[user] {{ m['content'] }}{% endfor %} [bot] "
    framed = gen.tokenizer.decode(prompt_ids(gen.tokenizer, prompt))
    assert framed == "[user] Write about Ann. [bot] Ann Lee Law"


def test_a_killed_data_stage_resumes_its_bios_from_the_stage_folder(tmp_path, monkeypatch):
    """Through the stage cache (scripts/run.py's path): the bios survive the kill in the data stage's
    own folder, not in the temp folder the build writes in, and the rebuild asks only for the rest."""
    from biolab.pipeline.cache import Stage, StageError, ensure
    from biolab.stages.data import DATA, LLM_CACHE

    model = tmp_path / "model"  # a folder that passes the check; the generator is scripted
    model.mkdir()
    (model / "config.json").write_text("{}")
    cfg = llm_config(multi=2, llm={"model": str(model), "batch_size": 4}).to_dict()
    killed, rest = ScriptedModel(fail_at_call=2), ScriptedModel()
    models = iter([killed, rest])
    monkeypatch.setattr("biolab.data.dataset.load_generator", lambda llm: next(models))
    stage = Stage(DATA, cfg)
    with pytest.raises((KeyboardInterrupt, StageError)):
        ensure(stage, tmp_path / "root", log=lambda m: None, progress=False)
    folder = tmp_path / "root" / stage.rel()
    assert len((folder / LLM_CACHE / "bios.jsonl").read_text().splitlines()) == 8  # people 0-3, 2 each
    ensure(stage, tmp_path / "root", log=lambda m: None, progress=False)
    assert len(rest.calls) == 4 and not (folder / LLM_CACHE).exists()  # people 4-5; the cache is spent
    assert len((folder / "bios.jsonl").read_text().splitlines()) == 12
