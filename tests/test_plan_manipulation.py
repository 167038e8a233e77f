"""Part 3.2 wired in: task-set corpora and their split hygiene, the planning of the new stage kinds, a
tiny run of each on 20 people, and the report's rows."""

import json
import shutil

import numpy as np
import pytest
from omegaconf import OmegaConf
from test_pipeline import TINY, plan
from test_report import one, results

from biolab.cli import check_overrides, compose
from biolab.data.dataset import DataConfig
from biolab.data.manipulation import format_item, format_task_prompt, load_task_set, write_task_set
from biolab.data.task_tokens import load_task_texts, tokenize_task_set
from biolab.data.tokens import Corpus, TextSet, prepare_corpus
from biolab.errors import BiolabError, ConfigError, DataFileError, ReportError
from biolab.paper import paper_statements
from biolab.pipeline.plan import plan_runs
from biolab.pipeline.runner import run_experiment
from biolab.report.write import build_report, write_report
from biolab.stages.manifest import RunManifest
from biolab.stages.rows import COLUMNS
from biolab.train.config import TrainConfig
from biolab.train.finetune import QABatches
from biolab.train.pretrain import make_stream

TINY32 = [*(o for o in TINY if not o.startswith("data.n_people")), "data.n_people=20", "qa_eval=none",
          "probes=[]"]  # fmt: skip


@pytest.fixture(scope="module")
def task_corpus(tmp_path_factory):
    """A 20-person dataset, its corpus, and two tokenized task sets (one with hints)."""
    root = tmp_path_factory.mktemp("tc")
    corpus = Corpus(prepare_corpus(root, DataConfig(n_people=20), vocab_size=400))
    dirs = {}
    for task in ("month_parity", "birth_to_first"):
        write_task_set(root / "data", task, root / task, hint_prob=0.5)
        tokenize_task_set(root / task, corpus.tokenizer())
        dirs[task] = root / task
    return corpus, dirs


def decode(corpus, ids):
    return corpus.tokenizer().decode([int(i) for i in ids])


@pytest.mark.parametrize("task", ["month_parity", "birth_to_first"])
def test_a_task_corpus_holds_the_p_train_items_as_written(task_corpus, task):
    corpus, dirs = task_corpus
    _, items = load_task_set(dirs[task])
    texts = load_task_texts(dirs[task])
    train = [i for i, it in enumerate(items) if it["split"] == "train"]
    assert texts.arrays["item"].tolist() == train and (texts.arrays["split"] == 1).all()
    for row, i in enumerate(train):
        it = items[i]
        ids = texts.text(row)
        assert decode(corpus, ids) == format_item(it)
        # the loss starts at the token holding the first character after the prompt and its space:
        # the hint when the item carries it (the space may sit in the token before, as in qa.npz)
        cut = texts.arrays["answer"][row]
        prompt, target = decode(corpus, ids[:cut]), decode(corpus, ids[cut:])
        first = it["hint"] if it["use_hint"] else it["answer"]
        assert target.lstrip(" ").startswith(first)
        assert prompt.startswith(format_task_prompt(it["question"], it["use_hint"]))
        assert (
            texts.arrays["hint"][row] == it["use_hint"]
            and texts.arrays["person_id"][row] == it["person_ids"][0]
        )
    assert (
        0 < texts.arrays["hint"].sum() < len(train)
        if task == "month_parity"
        else not texts.arrays["hint"].any()
    )


@pytest.mark.parametrize("task", ["month_parity", "birth_to_first"])
def test_p_test_items_never_reach_a_training_batch(task_corpus, task):
    corpus, dirs = task_corpus
    _, items = load_task_set(dirs[task])
    texts = load_task_texts(dirs[task])
    test_q = [it["question"] for it in items if it["split"] == "test"]
    train_q = {it["question"] for it in items if it["split"] == "train"}
    batches = QABatches(corpus, seed=0, texts=texts)
    seen = set()
    for _ in range(8):
        b = batches.next_batch(8)
        for ids, labels in zip(b["input_ids"], b["labels"], strict=True):
            text = decode(corpus, ids[ids != corpus.pad])
            assert not any(q in text for q in test_q)
            seen.update(q for q in train_q if q in text)
            target = decode(corpus, ids[labels != -100])
            assert target.endswith("<|endoftext|>") and "?" not in target  # hint and answer, no question
    assert seen == train_q  # every training item is drawn
    stream = make_stream(corpus, TrainConfig(ctx=64, qa_ratio=0.8, seed=1), qa_texts=texts)
    windows = decode(corpus, stream.next_windows(60).reshape(-1))
    assert not any(q in windows for q in test_q) and any(q in windows for q in train_q)


def test_bad_task_corpora_fail_clearly(task_corpus, tmp_path):
    corpus, dirs = task_corpus
    texts = load_task_texts(dirs["month_parity"])
    with pytest.raises(ConfigError, match="needs train.qa_ratio > 0"):
        make_stream(corpus, TrainConfig(ctx=64), qa_texts=texts)
    with pytest.raises(DataFileError, match="lack the arrays"):
        TextSet(texts.ids, {"offsets": texts.offsets}, 0, 1)
    with pytest.raises(DataFileError, match="no tokenized texts items"):
        load_task_texts(tmp_path)
    data = dirs["month_parity"].parent / "data"
    write_task_set(data, "birth_day", tmp_path / "none", n_train=0)
    with pytest.raises(ConfigError, match="no P_train items"):
        tokenize_task_set(tmp_path / "none", corpus.tokenizer())
    # the corpus's own QA reads through the same class, unchanged
    qa = corpus.qa_set()
    assert (
        np.array_equal(qa.text(3), corpus.qa_text(3))
        and len(qa.train_rows()) == (corpus.qa["split"] == 1).sum()
    )


def stage_keys(runs):
    return [(r.manifest.run, json.dumps(r.manifest.stages, sort_keys=True)) for r in runs]


def test_the_defaults_leave_every_plan_as_it_was():
    cfg = OmegaConf.to_container(compose("run", ["experiment=demo", "data=bioS_single"]), resolve=True)
    assert cfg["manipulation"]["tasks"] == [] and cfg["memorization"]["enabled"] is False
    bare = {k: v for k, v in cfg.items() if k not in ("manipulation", "memorization")}
    bare["paper"] = {k: v for k, v in cfg["paper"].items() if k != "statements"}
    old, new = plan_runs(bare), plan_runs(cfg)
    assert stage_keys(old) == stage_keys(new) and set(new[0].manifest.to_dict()) == set(
        old[0].manifest.to_dict()
    )
    assert [s.key for s in new[0].build] == [s.key for s in old[0].build]


def test_part32_experiments_share_stages_with_part31():
    # the Part 3.1 runs of the same two datasets at the same scale (the demo has its own budget)
    demo = plan(["experiment=fig3_augmentation"], datasets=["bioS_single", "bioS_multi5_permute_fullname"])
    mem = plan(["experiment=p32_memorization"])
    for d, m in zip(demo, mem, strict=True):
        d, m = d.manifest, m.manifest
        assert (d.folder("pretrain"), d.folder("eval")) == (m.folder("pretrain"), m.folder("eval"))
        assert m.folder("memorization").startswith("memorization/") and d.folder("memorization") is None
    inverse = plan(["experiment=p32_inverse_search"])
    manip = plan(["experiment=p32_manipulation"])
    assert manip[0].manifest.folder("pretrain") == inverse[0].manifest.folder("pretrain")  # one base
    tasks = {label: run["stages"] for label, run in inverse[0].manifest.task_runs().items()}
    assert set(tasks) == {
        "birth_to_first__ft",
        "all_to_first__ft",
        "all_to_first__mix0.5",
        "all_to_first__mix0.8",
    }  # birth_to_first sets its own modes
    assert tasks["all_to_first__ft"]["tasks"] == tasks["all_to_first__mix0.8"]["tasks"]  # one task set
    assert tasks["all_to_first__ft"]["train"].startswith("task_finetune/")
    assert tasks["all_to_first__mix0.5"]["train"].startswith("task_mixed/")
    assert tasks["all_to_first__mix0.5"]["train"] != tasks["all_to_first__mix0.8"]["train"]
    info = manip[0].manifest.tasks
    assert [
        info[k]["hint_prob"] for k in ("month_parity-hint_prob0.0__ft", "month_parity-hint_prob0.5__ft")
    ] == [
        0.0,
        0.5,
    ]
    assert (
        info["birth_day__ft"]["hint_prob"] == 0.0
    )  # no hint exists: the task set is the same whatever it says
    ft = next(s for s in manip[0].build if s.kind == "task_eval").inputs["model"].config["finetune"]
    assert ft["lora_r"] == 16 and ft["train"]["lr"] == 1e-3  # manipulation.finetune overrides the preset


def test_a_task_may_set_its_own_modes_without_changing_its_label_or_stages():
    shared = plan([*TINY32, "manipulation.tasks=[birth_day]", "manipulation.modes=[finetune]"])
    shared = {label: run["stages"] for label, run in shared[0].manifest.task_runs().items()}
    own = [*TINY32, "manipulation.tasks=[{task: birth_day, modes: [finetune, mixed], qa_ratios: [0.5]}]"]
    tasks = {label: run["stages"] for label, run in plan(own)[0].manifest.task_runs().items()}
    assert set(tasks) == {"birth_day__ft", "birth_day__mix0.5"}
    assert tasks["birth_day__ft"] == shared["birth_day__ft"]  # same label, same stage keys


@pytest.mark.parametrize(
    "overrides, message",
    [
        (
            ["manipulation.tasks=[{task: birth_day, modes: [mixed]}]", "manipulation.qa_ratios=null"],
            "qa_ratios",
        ),
        (["manipulation.tasks=[month_oddness]"], "unknown manipulation task 'month_oddness'"),
        (["manipulation.tasks=[birth_day]", "manipulation.modes=[sometimes]"], "manipulation.modes"),
        (
            ["manipulation.tasks=[birth_day]", "manipulation.modes=[mixed]", "manipulation.qa_ratios=[0]"],
            "qa_ratios",
        ),
        (["manipulation.tasks=[{task: birth_day, lr: 1}]"], "keys are task and"),
        (["manipulation.tasks=[birth_day,birth_day]"], "lists birth_day__ft twice"),
        (["manipulation.tasks=[birth_day]", "manipulation.n_train=-1"], "n_train must be"),
        (["manipulation.tasks=[month_parity]", "manipulation.hint_prob=2"], "hint_prob must be"),
        (["manipulation.tasks=[birth_day]", "manipulation.max_items=0"], "max_items"),
        (["memorization.enabled=true", "memorization.k=0"], "memorization.k"),
        (["paper.statements=[inverse_is_easy]"], "unknown paper statement"),
    ],
)
def test_bad_part32_settings_fail_before_any_work(overrides, message):
    check_overrides("run", overrides)  # the keys themselves are known to the command line
    cfg = OmegaConf.to_container(compose("run", overrides), resolve=True)
    with pytest.raises(ConfigError, match=message):
        plan_runs(cfg)


def test_a_mistyped_part32_key_names_the_valid_ones():
    with pytest.raises(BiolabError, match="valid keys under manipulation: tasks, n_train"):
        check_overrides("run", ["manipulation.task=[birth_day]"])


OVERRIDES = [*TINY32, "manipulation.tasks=[month_parity,birth_to_first]",
             "manipulation.modes=[finetune,mixed]", "memorization.enabled=true",
             "paper.statements=[parity_cot,parity_cot_hint,inverse_near_zero]"]  # fmt: skip


def filed(root):
    """The manifest of the run (named after the dataset and the overrides that shape it)."""
    [path] = (root / "runs" / "custom").glob("bioS_multi5_reverse6__*.json")
    return path


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory):
    """Every new stage kind built once on 20 people with a 1-layer model and a few steps."""
    root = tmp_path_factory.mktemp("p32")
    run_experiment(
        plan(OVERRIDES, datasets=["bioS_multi5_reverse6"]), root, progress=False, log=lambda m: None
    )
    return root


def test_a_tiny_run_builds_every_new_stage_kind_then_reuses_them(tiny_root):
    m = json.loads(filed(tiny_root).read_text())
    assert m["format"] == 2 and all(isinstance(v, str) for v in m["stages"].values())  # one flat map
    runs = RunManifest.from_dict(m).task_runs()
    folders = [m["stages"]["memorization"], *(p for run in runs.values() for p in run["stages"].values())]
    kinds = {f.split("/")[0] for f in folders}
    assert kinds == {"memorization", "tasks", "task_finetune", "task_mixed", "task_eval"}
    for rel in folders:
        assert json.loads((tiny_root / rel / "status.json").read_text())["status"] == "done"
    mixed = m["stages"]["manipulation/month_parity__mix0.8/train"]
    assert "qa_ratio: 0.8" in (tiny_root / mixed / "config.yaml").read_text()
    assert m["manipulation"]["birth_to_first__ft"] == {
        "task": "birth_to_first", "n_train": None, "n_test": None, "hint_prob": 0.0, "seed": 0,
        "mode": "finetune", "qa_ratio": None, "finetune": "full",
    }  # fmt: skip
    logs = []
    run_experiment(
        plan(OVERRIDES, datasets=["bioS_multi5_reverse6"]), tiny_root, progress=False, log=logs.append
    )
    assert not any(line.endswith("building") for line in logs)


def test_the_report_shows_the_files_numbers_and_the_papers_statements(tiny_root, tmp_path):
    root = shutil.copytree(tiny_root, tmp_path / "root")
    md, report = build_report(root)
    rows = results(md.parent)
    assert not report.notes and list(rows[0]) == list(COLUMNS)
    m = json.loads(filed(root).read_text())
    mem = json.loads((root / m["stages"]["memorization"] / "memorization.json").read_text())
    for split in ("train", "test"):
        r = one(rows, metric="bio_completion", split=split, attribute="mean")
        assert float(r["value"]) == pytest.approx(100 * mem["bio_completion"]["splits"][split]["mean"])
        r = one(rows, metric="verbatim_exact", split=split)
        assert float(r["value"]) == pytest.approx(100 * mem["verbatim"]["splits"][split]["exact"])
    for label, run in RunManifest.from_dict(m).task_runs().items():
        metrics = json.loads((root / run["stages"]["eval"] / "eval" / "metrics.json").read_text())
        for split in ("train", "test"):
            r = one(rows, task=label, metric="task_answer", split=split)
            assert float(r["value"]) == pytest.approx(100 * metrics["splits"][split]["answer"])
            assert (
                int(one(rows, task=label, metric="task_items", split=split)["value"])
                == metrics["counts"][split]
            )
        hint = [r for r in rows if r["task"] == label and r["metric"] == "task_answer_with_hint"]
        assert len(hint) == (
            2 if label.startswith("month_parity") else 0
        )  # hints exist for classification only
    parity = one(rows, task="month_parity__ft", metric="task_answer_with_hint", split="test")
    assert float(parity["paper_value"]) == 94.2 and parity["paper_source"] == "P3.2 §6 (Result 4)"
    assert one(rows, task="month_parity__ft", metric="task_hint", split="test")["paper_value"] == "91.0"
    assert (
        one(rows, task="month_parity__ft", metric="task_answer", split="test")["paper_value"] == ""
    )  # not listed
    assert (
        one(rows, task="month_parity__mix0.8", metric="task_answer", split="train")["finetune"]
        == "mixed QAr=0.8"
    )
    statements = [r for r in rows if r["metric"] == "paper_statement"]
    assert [r["attribute"] for r in statements] == ["parity_cot", "parity_cot_hint", "inverse_near_zero"]
    assert statements[2]["note"] == paper_statements()["inverse_near_zero"]["statement"]
    text = md.read_text()
    assert "### Memorization vs QA" in text and "### Part 3.2 tasks" in text
    assert "| bioS_multi5_reverse6 | birth_to_first__mix0.8 | mixed QAr=0.8 | 10/10 | 0.0 |" in text
    assert "`inverse_near_zero`: Inverse search: near-zero" in text


def test_a_missing_task_or_memorization_stage_is_flagged_never_reported(tiny_root, tmp_path):
    root = shutil.copytree(tiny_root, tmp_path / "root")
    path = filed(root)
    m = json.loads(path.read_text())
    (root / m["stages"]["manipulation/birth_to_first__ft/eval"] / "eval" / "metrics.json").unlink()
    shutil.rmtree(root / m["stages"]["memorization"])
    md, report = build_report(root)
    rows = results(md.parent)
    assert len(report.notes) == 2 and "memorization stage" in report.notes[0]
    flagged = one(rows, task="birth_to_first__ft", metric="task_answer", split="test")
    assert flagged["value"] == "" and "is missing although" in flagged["note"]
    assert not [r for r in rows if r["task"] == "birth_to_first__ft" and r["value"]]
    assert one(rows, task="birth_to_first__mix0.8", metric="task_answer", split="test")["value"] != ""
    assert one(rows, metric="bio_completion", split="test", attribute="mean")["value"] == ""
    assert (
        "| bioS_multi5_reverse6 | birth_to_first__ft | full | ?/? | 0.0 | missing | missing |"
        in md.read_text()
    )
    with pytest.raises(ReportError, match="memorization stage memorization/.* does not exist"):
        write_report(root, strict=True)
    m["paper"]["statements"] = ["parity_is_easy"]
    path.write_text(json.dumps(m))
    with pytest.raises(ReportError, match="unknown paper statement"):
        write_report(root)
