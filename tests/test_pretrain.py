import hashlib
import json
import math
import os
import re
import shutil
import subprocess
import sys
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch
from conftest import run_in_fork, unusable_out
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

import biolab.train.pretrain as pretrain_module
from biolab.console import captured_output, reporting
from biolab.data.dataset import DataConfig
from biolab.data.tokens import Corpus, prepare_corpus
from biolab.errors import ConfigError
from biolab.model import ModelConfig, build_model
from biolab.status import read_status
from biolab.train.config import TrainConfig, TrainingError
from biolab.train.curves import plot_training
from biolab.train.finetune import finetune_configs
from biolab.train.log import log_summary
from biolab.train.pretrain import make_stream, pretrain, train

ROOT = Path(__file__).resolve().parent.parent
MODEL = ModelConfig(name="test", n_layer=2, n_head=2, d_model=32, max_positions=64)


def train_cfg(**kw):
    base = dict(steps=6, batch_size=4, ctx=32, warmup_steps=2, log_every=1, eval_every=3, eval_people=8,
                ckpt_every=2, wandb="disabled")  # fmt: skip
    return TrainConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("pre")
    return Corpus(prepare_corpus(root, DataConfig(n_people=60, multi=2), vocab_size=400))


def weights(run):
    return load_file(str(Path(run) / "model" / "model.safetensors"))


def test_a_tiny_run_learns_and_saves_an_hf_model(corpus, tmp_path):
    final = pretrain(tmp_path, corpus, MODEL, train_cfg(steps=30, lr=3e-3, eval_every=15), progress=False)
    rows = [json.loads(r) for r in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in rows if "loss" in r]
    assert len(losses) == 30 and losses[-1] < losses[0] - 0.5
    assert "bio_first_token/test/mean" in final and final["tokens_per_s"] > 0
    status = read_status(tmp_path)
    assert status["status"] == "done" and status["device"].startswith("cpu") and "git_commit" in status
    model = AutoModelForCausalLM.from_pretrained(str(tmp_path / "model"))
    tok = AutoTokenizer.from_pretrained(str(tmp_path / "model"))
    out = model.generate(**tok("What is the birth date of", return_tensors="pt"), max_new_tokens=3)
    assert out.shape[1] > 3
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step_0000026", "step_0000028"]
    # the model names the dataset it was trained on, so evaluate/probe can refuse another one
    record = json.loads((tmp_path / "model" / "training_data.json").read_text())
    data = json.loads((Path(corpus.meta["data_dir"]) / "meta.json").read_text())
    assert record["sha256"] == data["sha256"] and record["name"] == data["config"]["name"]
    png = plot_training(tmp_path, tmp_path / "curves.png")
    assert png.stat().st_size > 10_000


def test_resume_ends_with_the_same_weights(corpus, tmp_path):
    pretrain(tmp_path / "a", corpus, MODEL, train_cfg(), progress=False)

    def kill(step, model):
        if step == 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        pretrain(tmp_path / "b", corpus, MODEL, train_cfg(), on_step=kill, progress=False)
    assert read_status(tmp_path / "b")["status"] == "failed"
    pretrain(tmp_path / "b", corpus, MODEL, train_cfg(), progress=False)  # resumes from step 4
    a, b = weights(tmp_path / "a"), weights(tmp_path / "b")
    assert all(torch.equal(a[k], b[k]) for k in a)
    steps = [json.loads(r)["step"] for r in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(steps)  # rows after the checkpoint were dropped, not duplicated


def test_a_non_finite_loss_stops_and_keeps_the_last_checkpoint(corpus, tmp_path):
    def poison(step, model):
        if step == 3:
            with torch.no_grad():
                next(model.parameters()).fill_(float("nan"))

    with pytest.raises(TrainingError, match=r"non-finite loss nan at step 4; the last good checkpoint"):
        pretrain(tmp_path, corpus, MODEL, train_cfg(), on_step=poison, progress=False)
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["step_0000002"]
    assert read_status(tmp_path)["status"] == "failed" and not (tmp_path / "model").exists()


def test_mixed_training_runs(corpus, tmp_path):
    final = pretrain(tmp_path, corpus, MODEL, train_cfg(steps=2, qa_ratio=0.8), progress=False)
    assert final["step"] == 2


def test_bad_input_fails_before_training(corpus, tmp_path):
    with pytest.raises(ConfigError, match="train.ctx=128 exceeds model.max_positions=64"):
        pretrain(tmp_path, corpus, MODEL, train_cfg(ctx=128))
    with pytest.raises(ConfigError, match="not a multiple of train.micro_batch_size=3"):
        pretrain(tmp_path, corpus, MODEL, train_cfg(micro_batch_size=3))
    assert not (tmp_path / "status.json").exists()
    pretrain(tmp_path, corpus, MODEL, train_cfg(steps=1), progress=False)
    before = weights(tmp_path)
    with pytest.raises(ConfigError, match="holds a finished run; pass overwrite=true"):
        pretrain(tmp_path, corpus, MODEL, train_cfg(steps=1))
    assert all(torch.equal(before[k], v) for k, v in weights(tmp_path).items())
    pretrain(tmp_path, corpus, MODEL, train_cfg(steps=2), overwrite=True, progress=False)
    assert read_status(tmp_path)["steps"] == 2


def cli(run, extra=(), launcher=()):
    args = [
        "model=tiny", "model.n_layer=2", "model.n_head=2", "model.d_model=32", "train.ctx=32",
        "train.batch_size=4", "train.steps=3", "train.warmup_steps=1", "train.eval_every=0",
        "train.wandb=disabled", "data.n_people=40", "tokenizer.vocab_size=300", f"out={run}",
        "progress=false", *extra,
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if list(launcher) == [sys.executable]:  # a plain python: forked from this one, torch imported already
        return run_in_fork([ROOT / "scripts" / "pretrain.py", *args], timeout=600, env=env)
    return subprocess.run([*launcher, str(ROOT / "scripts" / "pretrain.py"), *args], capture_output=True,
                          text=True, timeout=600, env=env)  # fmt: skip


@pytest.mark.slow
def test_cli_and_two_process_accelerate_match_one_process(tmp_path):
    one = cli(tmp_path / "one", launcher=[sys.executable])
    assert one.returncode == 0, one.stderr
    two = cli(tmp_path / "two", extra=[f"data_dir={tmp_path / 'one' / 'data'}"], launcher=[
        sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "2", "--num_machines", "1",
        "--mixed_precision", "no", "--dynamo_backend", "no", "--cpu",
    ])  # fmt: skip
    assert two.returncode == 0, two.stderr
    a, b = weights(tmp_path / "one"), weights(tmp_path / "two")
    # the same global batches, averaged over 2 processes instead of 1: equal up to float rounding
    assert all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)
    shutil.rmtree(tmp_path / "two" / "checkpoints", ignore_errors=True)


BAD_INPUT = [
    (["model=nope"], "unknown model preset 'nope'"),
    (["train.ctx=1024"], "train.ctx=1024 exceeds model.max_positions=512"),
    (["train.batch_size=5", "train.micro_batch_size=2"], "not a multiple of train.micro_batch_size=2"),
    (["data_dir=/nonexistent"], "not a biolab dataset"),
]


def test_cli_bad_input(tmp_path):
    # one process per core: each spends seconds importing torch before its one-line answer
    with ThreadPoolExecutor(os.cpu_count() or 1) as pool:
        results = list(pool.map(lambda i: cli(tmp_path / f"run{i}", extra=BAD_INPUT[i][0],
                                              launcher=[sys.executable]), range(len(BAD_INPUT))))  # fmt: skip
    for i, ((extra, message), r) in enumerate(zip(BAD_INPUT, results, strict=True)):
        assert r.returncode != 0 and message in r.stderr and r.stderr.startswith("error:"), (extra, r.stderr)
        assert not (tmp_path / f"run{i}").exists()


def strict_rows(path):
    """metrics.jsonl rows, parsed as strict JSON: NaN or Infinity in a row is an error."""

    def refuse(name):
        raise ValueError(f"{name} is not JSON")

    return [json.loads(r, parse_constant=refuse) for r in Path(path).read_text().splitlines()]


def all_finite(run):
    files = [*Path(run).rglob("*.safetensors")]
    assert files
    return all(torch.isfinite(t).all() for f in files for t in load_file(str(f)).values())


def test_a_nan_gradient_with_a_finite_loss_is_never_applied(corpus, tmp_path):
    def poison_grads(step, model):
        if step == 3:  # the next backward gives a NaN gradient; the forward (the loss) stays finite
            next(model.parameters()).register_hook(lambda g: torch.full_like(g, float("nan")))

    with pytest.raises(TrainingError, match=r"non-finite gradient norm nan at step 4 \(loss [0-9.]+\); "
                                             r"the last good checkpoint is .*step_0000003$"):  # fmt: skip
        pretrain(tmp_path, corpus, MODEL, train_cfg(ckpt_every=1, eval_every=0), on_step=poison_grads,
                 progress=False)  # fmt: skip
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step_0000002", "step_0000003"]
    assert all_finite(tmp_path / "checkpoints")
    assert [r["step"] for r in strict_rows(tmp_path / "metrics.jsonl") if "loss" in r] == [1, 2, 3]
    assert read_status(tmp_path)["status"] == "failed" and not (tmp_path / "model").exists()


@pytest.mark.parametrize(("steps", "ckpt_every"), [(4, 2), (2, 0)])  # a checkpoint, the final model
def test_non_finite_weights_are_never_saved(corpus, tmp_path, steps, ckpt_every):
    def poison(step, model):
        if step == 2:
            with torch.no_grad():
                next(model.parameters())[0, 0] = float("inf")

    with pytest.raises(TrainingError, match=r"refusing to save step 2: .* holds non-finite values"):
        pretrain(tmp_path, corpus, MODEL, train_cfg(steps=steps, ckpt_every=ckpt_every), on_step=poison,
                 progress=False)  # fmt: skip
    assert not (tmp_path / "model").exists() and not list((tmp_path / "checkpoints").glob("*step_*"))
    assert read_status(tmp_path)["status"] == "failed"


def test_metrics_rows_are_strict_json_with_null_for_non_finite(corpus, tmp_path):
    cfg = train_cfg(steps=2, eval_every=1, ckpt_every=0)

    def make_model():
        return build_model(MODEL, corpus.vocab_size, corpus.eos, corpus.pad, corpus.eos)

    def evaluate(model):
        return {"probe/nan": float("nan"), "probe/inf": float("-inf"), "probe/ok": 0.5}

    train(tmp_path, make_model, corpus.tokenizer(), make_stream(corpus, cfg), cfg, evaluate=evaluate,
          progress=False)  # fmt: skip
    evals = [r for r in strict_rows(tmp_path / "metrics.jsonl") if "probe/ok" in r]
    assert evals == [{"step": s, "probe/nan": None, "probe/inf": None, "probe/ok": 0.5} for s in (1, 2)]


def test_saved_tokenizer_knows_the_model_context(corpus, tmp_path):
    pretrain(tmp_path, corpus, MODEL, train_cfg(steps=1, ckpt_every=0), progress=False)
    assert AutoTokenizer.from_pretrained(str(tmp_path / "model")).model_max_length == MODEL.max_positions


def files_of(run):
    """Every file of a run folder, with its bytes."""
    return {p.relative_to(run).as_posix(): p.read_bytes() for p in Path(run).rglob("*") if p.is_file()}


def test_a_killed_overwrite_leaves_the_finished_run_as_it_was(corpus, tmp_path, capsys):
    run = tmp_path / "run"
    pretrain(run, corpus, MODEL, train_cfg(steps=3, eval_every=0), progress=False)
    before = files_of(run)
    assert {"model/model.safetensors", "status.json", "metrics.jsonl"} <= set(before)

    def kill(step, model):
        if step == 3:  # after the new run's first checkpoint (step 2)
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        pretrain(run, corpus, MODEL, train_cfg(steps=4, eval_every=0), overwrite=True, on_step=kill,
                 progress=False)  # fmt: skip
    assert files_of(run) == before and read_status(run)["status"] == "done"
    capsys.readouterr()
    pretrain(run, corpus, MODEL, train_cfg(steps=4, eval_every=0), overwrite=True, progress=False)
    assert "resuming" not in capsys.readouterr().out  # a later overwrite starts clean
    assert read_status(run)["status"] == "done" and read_status(run)["steps"] == 4
    assert [r["step"] for r in strict_rows(run / "metrics.jsonl") if "loss" in r] == [1, 2, 3, 4]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # the hidden new run was moved in
    assert not [p.name for p in run.iterdir() if p.name.startswith(".")]
    pretrain(tmp_path / "fresh", corpus, MODEL, train_cfg(steps=4, eval_every=0), progress=False)
    fresh = weights(tmp_path / "fresh")
    assert all(torch.equal(fresh[k], v) for k, v in weights(run).items())


def test_overwrite_of_the_working_directory(corpus, tmp_path, monkeypatch):
    pretrain(tmp_path / "run", corpus, MODEL, train_cfg(steps=1, eval_every=0), progress=False)
    monkeypatch.chdir(tmp_path / "run")
    pretrain(".", corpus, MODEL, train_cfg(steps=2, eval_every=0), overwrite=True, progress=False)
    assert read_status(tmp_path / "run")["steps"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_a_folder_that_is_not_a_run_is_refused(corpus, tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match=r"is not empty and holds no training run"):
        pretrain(tmp_path, corpus, MODEL, train_cfg(steps=1), progress=False)
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


@pytest.mark.parametrize("case", ["not_a_run", "unwritable"])
def test_cli_refuses_an_unusable_out_in_one_line(tmp_path, case):
    out, message = unusable_out(tmp_path, case, "run")
    r = cli(out, launcher=[sys.executable])
    assert r.returncode == 2 and r.stderr.startswith("error:") and message in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    if case == "not_a_run":
        assert [p.name for p in out.iterdir()] == ["notes.txt"]


class FakeRun:
    def __init__(self, kw):
        self.kw, self.summary, self.rows, self.finished = kw, {}, [], False

    def log(self, row, step):
        self.rows.append((step, row))

    def finish(self):
        self.finished = True


@pytest.fixture
def fake_wandb(monkeypatch):
    """wandb.init replaced by a recorder; WANDB_MODE lifted from the session's "disabled"."""
    import wandb

    runs = []
    monkeypatch.setattr(wandb, "init", lambda **kw: runs.append(FakeRun(kw)) or runs[-1])
    monkeypatch.setenv("WANDB_MODE", "offline")
    return runs


META = {"name": "demo/bioS_single", "group": "demo", "tags": ["tiny", "bioS_single"],
        "config": {"experiment": "demo"}}  # fmt: skip


def test_wandb_gets_the_meta_and_the_summary_reaches_the_same_run(corpus, tmp_path, fake_wandb):
    run = tmp_path / "run"
    pretrain(run, corpus, MODEL, train_cfg(steps=2, wandb="offline"), wandb_meta=META, progress=False)
    (first,) = fake_wandb
    kw = first.kw
    assert (kw["name"], kw["group"], kw["tags"]) == (META["name"], "demo", META["tags"])
    assert kw["mode"] == "offline"
    assert kw["config"]["experiment"] == "demo" and kw["config"]["train"]["steps"] == 2
    assert kw["config"]["model"]["d_model"] == 32 and first.rows and first.finished
    log_summary(run, "offline", META, {"exact_match/test/birth_date": 0.5})
    second = fake_wandb[1]
    assert (second.kw["id"], second.kw["resume"], second.kw["name"]) == (kw["id"], "allow", META["name"])
    assert second.summary == {"exact_match/test/birth_date": 0.5} and second.finished
    log_summary(run, "disabled", META, {"x": 1.0})
    assert len(fake_wandb) == 2


def test_wandb_name_defaults_to_the_run_folder(corpus, tmp_path, fake_wandb):
    pretrain(tmp_path / "my_run", corpus, MODEL, train_cfg(steps=1, wandb="offline"), progress=False)
    assert fake_wandb[0].kw["name"] == "my_run"


def test_bad_wandb_meta_fails_before_training(corpus, tmp_path):
    for meta, message in (({"nmae": "x"}, "unknown wandb_meta key 'nmae'"),
                          ({"tags": "tiny"}, "wandb_meta.tags must be a list of str")):  # fmt: skip
        with pytest.raises(ConfigError, match=message):
            pretrain(tmp_path, corpus, MODEL, train_cfg(steps=1), wandb_meta=meta, progress=False)
    assert not tmp_path.joinpath("status.json").exists()


def test_tests_never_log_to_wandb(corpus, tmp_path, monkeypatch):
    import wandb

    calls = []
    monkeypatch.setattr(wandb, "init", lambda **kw: calls.append(kw))
    assert os.environ["WANDB_MODE"] == "disabled"  # set for the whole session by conftest.py
    pretrain(tmp_path, corpus, MODEL, train_cfg(steps=1, wandb="offline"), progress=False)
    log_summary(tmp_path, "offline", None, {"x": 1.0})
    assert calls == []


def test_wandb_offline_for_real(corpus, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb_dir"))
    monkeypatch.setenv("WANDB_SILENT", "true")
    run = tmp_path / "run"
    pretrain(run, corpus, MODEL, train_cfg(steps=1, wandb="offline", eval_every=0), wandb_meta=META,
             progress=False)  # fmt: skip
    log_summary(run, "offline", META, {"exact_match/test/mean": 0.25})
    # wandb 0.31 names a reopened run's folder "<id>-1"; older releases reuse "<id>"
    ids = {re.fullmatch(r"offline-run-\d{8}_\d{6}-(\w+?)(-\d+)?", p.name)[1]
           for p in (run / "wandb").glob("offline-run-*")}  # fmt: skip
    assert ids == {hashlib.sha1(str(run.resolve()).encode()).hexdigest()[:12]}  # one run, reopened


def test_the_loop_reports_its_steps_to_a_listening_console(corpus, tmp_path, capsys):
    sent, cfg = [], train_cfg(steps=6, eval_every=0, ckpt_every=0)
    with reporting(sent.append):
        pretrain(tmp_path / "a", corpus, MODEL, cfg, progress=False)
    assert sent[0] == {"step": 0, "total": 6, "loss": None, "tokens_per_s": None}  # before the first step
    assert sent[-1]["step"] == 6 and sent[-1]["loss"] > 0 and sent[-1]["tokens_per_s"] > 0
    assert "6/6" not in capsys.readouterr().err
    pretrain(tmp_path / "b", corpus, MODEL, train_cfg(steps=2, eval_every=0, ckpt_every=0), progress=True)
    assert "2/2" in capsys.readouterr().err  # a script run alone keeps its own bar


def test_wandb_is_quiet_inside_a_stage_log(corpus, tmp_path, fake_wandb):
    cfg = train_cfg(steps=1, wandb="offline", eval_every=0, ckpt_every=0)
    with captured_output(tmp_path / "log.txt"):
        pretrain(tmp_path / "quiet", corpus, MODEL, cfg, progress=False)
    pretrain(tmp_path / "loud", corpus, MODEL, cfg, progress=False)
    settings = fake_wandb[0].kw["settings"]
    assert settings.quiet and settings.console == "off" and fake_wandb[1].kw["settings"] is None


def test_exposures_set_the_steps_and_the_run_records_what_it_got(corpus, tmp_path):
    from biolab.train.pretrain import exposure_plan

    cfg = train_cfg(steps=1, exposures=3, eval_every=0, ckpt_every=0, warmup_steps=0)
    plan = exposure_plan(corpus, cfg)
    people = len(set(corpus.bios["person_id"].tolist()))
    per_bio = (corpus.bios["offsets"][-1] + corpus.n_bios) / corpus.n_bios
    assert plan["steps"] == math.ceil(3 * people * per_bio / (cfg.batch_size * cfg.ctx))
    assert 3 <= plan["exposures"] < 3 + cfg.batch_size * cfg.ctx / (people * per_bio)
    assert plan["passes"] == pytest.approx(plan["exposures"] / 2, abs=2e-3)  # 2 entries per person
    pretrain(tmp_path / "e", corpus, MODEL, cfg, progress=False)
    saved = json.loads((tmp_path / "e" / "config.json").read_text())
    assert saved["exposures"] == plan and saved["train"]["steps"] == plan["steps"]


def test_too_few_exposures_for_the_warmup_fail_before_work(corpus, tmp_path):
    with pytest.raises(ConfigError, match="warmup_steps"):
        pretrain(tmp_path / "w", corpus, MODEL, train_cfg(exposures=1, warmup_steps=10_000), progress=False)
    assert not (tmp_path / "w").exists()


@pytest.mark.parametrize("fast", [True, False])
def test_bf16_on_a_cpu_that_only_emulates_it_trains_in_fp32_and_says_so(corpus, tmp_path, monkeypatch, fast):
    if torch.cuda.is_available():
        pytest.skip("the fallback is for CPUs")
    monkeypatch.setattr(pretrain_module, "cpu_bf16_is_fast", lambda: fast)
    pretrain_module._warn_once.cache_clear()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pretrain(tmp_path, corpus, MODEL, train_cfg(steps=2, precision="bf16", eval_every=0), progress=False)
    said = [str(w.message) for w in caught if "no native bf16" in str(w.message)]
    assert len(said) == (0 if fast else 1)  # once, however often the precision is asked
    used = json.loads((tmp_path / "config.json").read_text())["precision_used"]
    assert used == ("bf16" if fast else "no")


def test_the_bf16_speed_check_answers_once_a_process():
    first = pretrain_module.cpu_bf16_is_fast()
    assert isinstance(first, bool) and pretrain_module.cpu_bf16_is_fast() is first


def test_bio_first_token_accuracy_reads_a_biod_datasets_own_attributes(tmp_path):
    biod = DataConfig(
        name="biod", style="bioD", n_people=16, multi=2, biod={"K": 3, "C": 2, "D": 16, "T": 32}
    )
    corpus = Corpus(prepare_corpus(tmp_path / "data", biod, vocab_size=300))
    cfg = train_cfg(steps=2, eval_every=1, ckpt_every=0, eval_people=4)
    final = pretrain(tmp_path / "run", corpus, MODEL, cfg, progress=False)
    assert [k for k in final if k.startswith("bio_first_token/test/")] == [
        "bio_first_token/test/ID 1", "bio_first_token/test/ID 2", "bio_first_token/test/ID 3",
        "bio_first_token/test/mean",
    ]  # fmt: skip
    assert (tmp_path / "run" / "model" / "model.safetensors").is_file()
    assert plot_training(tmp_path / "run", tmp_path / "curves.png").is_file()


def test_min_steps_without_exposures_is_refused():
    with pytest.raises(ConfigError, match=r"^train.min_steps=100 needs train.exposures"):
        TrainConfig.from_dict({"min_steps": 100})
    TrainConfig.from_dict({"min_steps": 100, "exposures": 10})


def test_a_finetunes_train_errors_name_their_section():
    with pytest.raises(ConfigError, match=r"^finetune.train.lr must be > 0"):
        finetune_configs({"method": "lora", "train": {"lr": -1.0}})
    with pytest.raises(ConfigError, match=r"^finetune.train.steps must be int"):
        finetune_configs({"method": "lora", "train": {"steps": "x"}})
    with pytest.raises(ConfigError, match=r"^train.lr must be > 0"):
        TrainConfig.from_dict({"lr": -1.0})
