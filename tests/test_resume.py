"""A resumed run: the config it is resumed with, the checkpoint it resumes from, and what the loop's
own errors and measurements name (issue 27)."""

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from biolab.data.dataset import DataConfig
from biolab.data.tokens import Corpus, prepare_corpus
from biolab.errors import ConfigError
from biolab.model import ModelConfig
from biolab.status import read_status
from biolab.train.config import TrainConfig, TrainingError
from biolab.train.finetune import FinetuneConfig, finetune
from biolab.train.pretrain import pretrain

MODEL = ModelConfig(name="test", n_layer=1, n_head=2, d_model=32, max_positions=64)


def train_cfg(**kw):
    base = dict(steps=6, batch_size=4, ctx=32, warmup_steps=2, log_every=1, eval_every=0, eval_people=8,
                ckpt_every=2, wandb="disabled")  # fmt: skip
    return TrainConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("resume")
    return Corpus(prepare_corpus(root, DataConfig(n_people=40, multi=2), vocab_size=300))


@pytest.fixture(scope="module")
def uninterrupted(corpus, tmp_path_factory):
    """The weights of the run every resumed run here must end with."""
    run = tmp_path_factory.mktemp("whole")
    pretrain(run, corpus, MODEL, train_cfg(), progress=False)
    return weights(run)


def weights(run, name="model/model.safetensors"):
    return load_file(str(Path(run) / name))


def same(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def killed_at(step):
    def kill(done, model):
        if done == step:
            raise KeyboardInterrupt

    return kill


def killed_run(corpus, run, cfg=None, model=MODEL, step=5):
    """A run killed at ``step`` (checkpoints at 2 and 4)."""
    with pytest.raises(KeyboardInterrupt):
        pretrain(run, corpus, model, cfg or train_cfg(), on_step=killed_at(step), progress=False)
    return sorted(p.name for p in (run / "checkpoints").glob("*"))


def files_of(run):
    return {p.relative_to(run).as_posix(): p.read_bytes() for p in Path(run).rglob("*") if p.is_file()}


# -- case 1: a resumed run whose config differs from its checkpoint's --------------------------------


@pytest.mark.parametrize(("model", "cfg", "named"), [
    (MODEL, train_cfg(lr=3e-3), "train.lr=0.001 (now 0.003)"),
    (MODEL, train_cfg(steps=8), "train.steps=6 (now 8)"),
    (MODEL, train_cfg(seed=1, compile=True), "train.compile=false (now true), train.seed=0 (now 1)"),
    (replace(MODEL, n_layer=2), train_cfg(), "model.n_layer=1 (now 2)"),
])  # fmt: skip
def test_a_resume_with_another_config_stops_before_any_work(corpus, tmp_path, model, cfg, named):
    killed_run(corpus, tmp_path)
    before = files_of(tmp_path)
    with pytest.raises(ConfigError) as err:
        pretrain(tmp_path, corpus, model, cfg, progress=False)
    message = str(err.value)
    assert "\n" not in message and "trained to step 4 with another config" in message, message
    assert named in message and "overwrite=true to start over" in message
    assert files_of(tmp_path) == before  # config.json still says what the checkpoints were trained with


def test_a_checkpoint_from_before_a_key_existed_resumes_with_the_key_at_its_default(
    corpus, tmp_path, uninterrupted
):
    """biolab updated between a kill and its resume: the checkpoint's record lacks keys added since
    (model.n_experts, train.junk_fraction); at their defaults they train as before, so it resumes."""
    killed_run(corpus, tmp_path)
    for record in tmp_path.glob("checkpoints/*/trainer.json"):
        data = json.loads(record.read_text())
        del data["config"]["model"]["n_experts"], data["config"]["train"]["junk_fraction"]
        record.write_text(json.dumps(data))
    pretrain(tmp_path, corpus, MODEL, train_cfg(), progress=False)
    assert same(weights(tmp_path), uninterrupted)
    killed_run(corpus, tmp_path / "other")
    for record in (tmp_path / "other").glob("checkpoints/*/trainer.json"):
        data = json.loads(record.read_text())
        del data["config"]["train"]["qa_ratio"]
        record.write_text(json.dumps(data))
    # a missing key at another value than its default is still another config
    with pytest.raises(ConfigError, match=r"train.qa_ratio=\"unset\" \(now 0.5\)"):
        pretrain(tmp_path / "other", corpus, MODEL, train_cfg(qa_ratio=0.5), progress=False)


def test_logging_keys_may_change_on_resume(corpus, tmp_path, uninterrupted):
    killed_run(corpus, tmp_path)
    logging = train_cfg(name="other", log_every=3, eval_every=2, eval_people=4, ckpt_every=3, keep_ckpts=1)
    pretrain(tmp_path, corpus, MODEL, logging, progress=False)
    assert same(weights(tmp_path), uninterrupted)


def test_overwrite_starts_a_run_with_another_config_over(corpus, tmp_path):
    killed_run(corpus, tmp_path)
    cfg = train_cfg(lr=3e-3)
    with pytest.raises(KeyboardInterrupt):  # a killed restart leaves the old checkpoints as they were
        pretrain(tmp_path, corpus, MODEL, cfg, overwrite=True, on_step=killed_at(3), progress=False)
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step_0000002", "step_0000004"]
    pretrain(tmp_path, corpus, MODEL, cfg, overwrite=True, progress=False)
    pretrain(tmp_path / "fresh", corpus, MODEL, cfg, progress=False)
    assert same(weights(tmp_path), weights(tmp_path / "fresh"))
    assert json.loads((tmp_path / "config.json").read_text())["train"]["lr"] == 3e-3


def test_a_checkpoint_records_the_config_it_was_trained_with(corpus, tmp_path):
    killed_run(corpus, tmp_path)
    record = json.loads((tmp_path / "checkpoints" / "step_0000004" / "trainer.json").read_text())
    assert record["config"]["train"]["lr"] == 1e-3 and record["config"]["model"]["n_layer"] == 1
    assert "eval_every" not in record["config"]["train"]  # logging keys are not part of it


@pytest.fixture(scope="module")
def base_model(corpus, tmp_path_factory):
    run = tmp_path_factory.mktemp("base")
    pretrain(run, corpus, MODEL, train_cfg(steps=2, ckpt_every=0), progress=False)
    return run / "model"


@pytest.mark.parametrize(("ft", "tr", "named"), [
    (FinetuneConfig(lora_r=4, embed_r=8), train_cfg(lr=3e-3), "finetune.train.lr=0.001 (now 0.003)"),
    (FinetuneConfig(lora_r=2, embed_r=8), train_cfg(), "finetune.lora_r=4 (now 2)"),
])  # fmt: skip
def test_a_finetune_resumed_with_another_config_stops(corpus, base_model, tmp_path, ft, tr, named):
    with pytest.raises(KeyboardInterrupt):
        finetune(tmp_path, base_model, corpus, FinetuneConfig(lora_r=4, embed_r=8), train_cfg(),
                 on_step=killed_at(5), progress=False)  # fmt: skip
    with pytest.raises(ConfigError, match="overwrite=true to start over") as err:
        finetune(tmp_path, base_model, corpus, ft, tr, progress=False)
    assert named in str(err.value)


# -- case 2: checkpoint integrity ---------------------------------------------------------------------


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def flip_mantissa(path: Path) -> None:
    """Flip the low byte of the file's last float32: a slightly different, still finite weight."""
    data = bytearray(path.read_bytes())
    data[-4] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", [truncate, flip_mantissa])
def test_a_damaged_newest_checkpoint_falls_back_to_the_intact_one(corpus, tmp_path, uninterrupted, capsys,
                                                                 damage):  # fmt: skip
    killed_run(corpus, tmp_path)
    newest = tmp_path / "checkpoints" / "step_0000004"
    damage(newest / "state" / "model.safetensors")
    capsys.readouterr()
    pretrain(tmp_path, corpus, MODEL, train_cfg(), progress=False)
    err = capsys.readouterr().err
    warned = [line for line in err.splitlines() if "damaged" in line]
    assert len(warned) == 1 and str(newest) in warned[0] and "resuming from step_0000002" in warned[0], err
    assert "state/model.safetensors does not match its recorded sha256" in warned[0]
    assert same(weights(tmp_path), uninterrupted)  # from step 2: the same weights
    kept = tmp_path / "checkpoints" / "damaged-step_0000004"  # moved aside, not retried, not deleted
    assert (kept / "trainer.json").is_file()
    assert read_status(tmp_path)["status"] == "done"


def test_a_checkpoint_of_older_code_without_hashes_is_still_resumed(corpus, tmp_path, uninterrupted):
    killed_run(corpus, tmp_path)
    for ckpt in (tmp_path / "checkpoints").iterdir():  # what older code wrote: the step alone
        (ckpt / "trainer.json").write_text(json.dumps({"step": int(ckpt.name.split("_")[1])}))
    pretrain(tmp_path, corpus, MODEL, train_cfg(lr=3e-3, steps=6), progress=False)  # nothing to compare
    killed_run(corpus, tmp_path / "b")
    for ckpt in (tmp_path / "b" / "checkpoints").iterdir():
        (ckpt / "trainer.json").write_text(json.dumps({"step": int(ckpt.name.split("_")[1])}))
    truncate(tmp_path / "b" / "checkpoints" / "step_0000004" / "state" / "model.safetensors")
    pretrain(tmp_path / "b", corpus, MODEL, train_cfg(), progress=False)  # truncated: set aside
    assert same(weights(tmp_path / "b"), uninterrupted)


def test_a_run_without_an_intact_checkpoint_starts_over_and_logs_each_step_once(
    corpus, tmp_path, uninterrupted
):
    killed_run(corpus, tmp_path)
    for ckpt in (tmp_path / "checkpoints").glob("step_*"):
        truncate(ckpt / "model" / "model.safetensors")
    pretrain(tmp_path, corpus, MODEL, train_cfg(), progress=False)
    assert same(weights(tmp_path), uninterrupted)
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == [
        "damaged-step_0000002", "damaged-step_0000004", "step_0000002", "step_0000004",
    ]  # fmt: skip
    killed_run(corpus, tmp_path / "early", step=1)  # before its first checkpoint
    pretrain(tmp_path / "early", corpus, MODEL, train_cfg(), progress=False)
    rows = [json.loads(r)["step"] for r in (tmp_path / "early" / "metrics.jsonl").read_text().splitlines()]
    assert rows == [1, 2, 3, 4, 5, 6]


def test_the_nan_stop_names_a_checkpoint_whose_hash_and_values_were_checked(corpus, tmp_path):
    def damage_then_poison(step, model):
        if step == 5:  # checkpoints at 2 and 4; the newest is damaged on disk, then training breaks
            flip_mantissa(tmp_path / "checkpoints" / "step_0000004" / "state" / "model.safetensors")
            with torch.no_grad():
                next(model.parameters()).fill_(float("nan"))

    with pytest.raises(TrainingError, match=r"non-finite loss nan at step 6; the last good checkpoint is "
                                            r".*step_0000002$"):  # fmt: skip
        pretrain(tmp_path, corpus, MODEL, train_cfg(), on_step=damage_then_poison, progress=False)
