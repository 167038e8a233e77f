import importlib.util
import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import run_in_fork, unusable_out
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from biolab.cli import compose
from biolab.data.dataset import DataConfig, iter_jsonl, write_dataset
from biolab.data.tokens import Corpus, prepare_corpus
from biolab.errors import ConfigError
from biolab.model import ModelConfig, build_model, load_model
from biolab.status import read_status
from biolab.train.config import TrainConfig
from biolab.train.finetune import FinetuneConfig, QABatches, apply_lora, expand_grid, finetune, key_rows
from biolab.train.pretrain import pretrain

ROOT = Path(__file__).resolve().parent.parent
SMALL = dict(n_layer=2, n_head=2, d_model=32, max_positions=64)


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    root = tmp_path_factory.mktemp("ft")
    corpus = Corpus(prepare_corpus(root, DataConfig(n_people=40), vocab_size=300))
    cfg = TrainConfig(
        steps=10, batch_size=4, ctx=32, warmup_steps=1, eval_every=0, ckpt_every=0, wandb="disabled"
    )
    pretrain(root, corpus, ModelConfig(name="t", **SMALL), cfg, progress=False)
    return root, corpus


def ft_train(**kw):
    base = dict(steps=8, batch_size=8, ctx=64, lr=3e-3, warmup_steps=0, weight_decay=0.01, eval_every=0,
                ckpt_every=4, log_every=1, wandb="disabled")  # fmt: skip
    return TrainConfig(**{**base, **kw})


def trainable(model):
    return {n: p for n, p in model.named_parameters() if p.requires_grad}


def test_lora_trains_only_qv_and_embedding_adapters():
    model = apply_lora(build_model(ModelConfig(**SMALL), 300, 0, 1), FinetuneConfig(lora_r=4, embed_r=16))
    names = trainable(model)
    assert all("lora_" in n for n in names)
    assert sum("query_key_value.lora" in n for n in names) == 2 * 2  # A and B per layer
    assert sum("embed_in.lora_embedding" in n for n in names) == 2
    a = next(p for n, p in names.items() if "layers.0" in n and "lora_A" in n)
    b = next(p for n, p in names.items() if "layers.0" in n and "lora_B" in n)
    assert a.shape == (4, 32) and b.shape == (96, 4)
    emb = [p for n, p in names.items() if "lora_embedding" in n]
    assert sorted(p.numel() for p in emb) == sorted([16 * 300, 32 * 16])


@pytest.mark.parametrize(("arch", "qkv"), [("gpt_neox", "query_key_value"), ("gpt2", "c_attn")])
def test_qv_only_keeps_the_key_block_frozen(arch, qkv):
    cfg = ModelConfig(arch=arch, **SMALL)
    model = apply_lora(build_model(cfg, 300, 0, 1), FinetuneConfig(lora_r=4, embed_r=0))
    opt = torch.optim.AdamW(trainable(model).values(), lr=1e-2, weight_decay=0.01)
    x = torch.randint(2, 300, (4, 16))
    for _ in range(3):
        model(input_ids=x, labels=x).loss.backward()
        opt.step()
        opt.zero_grad()
    layout = "per_head" if arch == "gpt_neox" else "blocks"
    rows = key_rows(layout, 2, 32)
    for n, p in trainable(model).items():
        if qkv in n and "lora_B" in n:
            assert torch.all(p[rows] == 0)
            others = torch.ones(p.shape[0], dtype=torch.bool)
            others[rows] = False
            assert p[others].abs().sum() > 0  # q and v did move


def test_llama_targets_q_and_v_projections():
    model = apply_lora(build_model(ModelConfig(arch="llama", **SMALL), 300, 0, 1), FinetuneConfig(embed_r=0))
    names = trainable(model)
    assert {n.split(".")[-4] for n in names} == {"q_proj", "v_proj"}


def test_qa_batches_use_p_train_answers_only(pretrained):
    root, corpus = pretrained
    split = {p["id"]: p["split"] for p in iter_jsonl(root / "data" / "people.jsonl")}
    qa = QABatches(corpus, seed=0)
    seen = set()
    for _ in range(10):
        b = qa.next_batch(16)
        assert b["input_ids"].shape == b["labels"].shape == b["attention_mask"].shape
        for ids, labels, mask in zip(b["input_ids"], b["labels"], b["attention_mask"], strict=True):
            target = ids[labels != -100]
            text = corpus.tokenizer().decode(target)
            assert text.endswith("<|endoftext|>") and "Answer" not in text  # the answer and EOS only
            assert (mask[labels != -100] == 1).all()
    for d in qa.docs:
        seen.add(int(corpus.qa["person_id"][d]))
    assert seen and all(split[p] == "train" for p in seen)
    state = qa.state_dict()
    again = QABatches(corpus, seed=0)
    again.load_state_dict(state)
    assert np.array_equal(again.next_batch(5)["input_ids"], qa.next_batch(5)["input_ids"])


@pytest.mark.parametrize("method", ["lora", "full"])
def test_finetune_learns_saves_and_reloads(pretrained, tmp_path, method):
    root, corpus = pretrained
    cfg = FinetuneConfig(method=method, lora_r=4, embed_r=16)
    held = {}
    final = finetune(tmp_path, root / "model", corpus, cfg, ft_train(steps=12), progress=False,
                     on_step=lambda step, model: held.update(model=model))  # fmt: skip
    assert final["step"] == 12 and read_status(tmp_path)["status"] == "done"
    saved = tmp_path / "model"
    assert (saved / ("adapter_config.json" if method == "lora" else "config.json")).is_file()
    model, tok = load_model(saved)
    base, _ = load_model(root / "model")
    x = torch.tensor([tok("What is the birth city of", add_special_tokens=False)["input_ids"]])
    assert not torch.allclose(model(input_ids=x).logits, base(input_ids=x).logits)  # it changed
    # the reloaded (merged) model computes what the trained one did: the embedding update is
    # input-side only, so merging must not move the tied output head
    trained = held["model"].eval()
    assert torch.allclose(model(input_ids=x).logits, trained(input_ids=x).logits, atol=1e-5)
    losses = [json.loads(r)["loss"] for r in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert losses[-1] < losses[0]


def test_finetune_resumes_to_the_same_adapter(pretrained, tmp_path):
    root, corpus = pretrained
    cfg = FinetuneConfig(lora_r=4, embed_r=16)
    finetune(tmp_path / "a", root / "model", corpus, cfg, ft_train(), progress=False)

    def kill(step, model):
        if step == 6:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        finetune(tmp_path / "b", root / "model", corpus, cfg, ft_train(), progress=False, on_step=kill)
    finetune(tmp_path / "b", root / "model", corpus, cfg, ft_train(), progress=False)
    a = load_file(str(tmp_path / "a" / "model" / "adapter_model.safetensors"))
    b = load_file(str(tmp_path / "b" / "model" / "adapter_model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_bad_finetune_input(pretrained, tmp_path):
    root, corpus = pretrained
    with pytest.raises(ConfigError, match="not a model folder"):
        finetune(tmp_path, tmp_path, corpus, FinetuneConfig(), ft_train())
    with pytest.raises(ConfigError, match="finetune.method must be lora or full"):
        FinetuneConfig.from_dict({"method": "qlora"})
    with pytest.raises(ConfigError, match="unknown finetune key"):
        FinetuneConfig.from_dict({"rank": 8})


def test_expand_grid():
    assert expand_grid({}) == [("run", [])]
    runs = expand_grid({"finetune.train.lr": [1e-3, 3e-4], "finetune.lora_r": [8, 16]})
    assert len(runs) == 4 and runs[0] == (
        "lora_r-8_lr-0.001",
        ["finetune.lora_r=8", "finetune.train.lr=0.001"],
    )


def peft_logits(base_dir, adapter, x):
    from peft import PeftModel

    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(str(base_dir)), str(adapter))
    return model.eval()(input_ids=x).logits


@pytest.fixture
def moved_adapter(pretrained, tmp_path, monkeypatch):
    """A LoRA run in root/ft from a pretrained model in root/pre/model; the whole root is then moved
    and the working directory changed. Returns (adapter folder, its logits before the move, input)."""
    src, corpus = pretrained
    root = tmp_path / "root"
    shutil.copytree(src / "model", root / "pre" / "model")
    finetune(root / "ft", root / "pre" / "model", corpus, FinetuneConfig(lora_r=4, embed_r=16),
             ft_train(steps=2, ckpt_every=1), progress=False)  # fmt: skip
    x = torch.tensor([corpus.tokenizer()("What is the birth city of", add_special_tokens=False)["input_ids"]])
    logits = peft_logits(root / "pre" / "model", root / "ft" / "model", x)
    moved = tmp_path / "elsewhere" / "root2"
    moved.parent.mkdir()
    shutil.move(root, moved)
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    return moved / "ft" / "model", logits, x


def test_a_lora_adapter_names_its_base_relative_to_itself(moved_adapter):
    adapter, logits, x = moved_adapter
    base = json.loads((adapter / "adapter_config.json").read_text())["base_model_name_or_path"]
    assert base == "../../pre/model"
    ckpt = adapter.parent / "checkpoints" / "step_0000001" / "model"
    assert json.loads((ckpt / "adapter_config.json").read_text())["base_model_name_or_path"] == (
        "../../../../pre/model"
    )
    resolved = (adapter / base).resolve()
    assert resolved == adapter.parent.parent / "pre" / "model"
    assert torch.allclose(peft_logits(resolved, adapter, x), logits, atol=1e-5)
    assert AutoTokenizer.from_pretrained(str(adapter)).model_max_length == SMALL["max_positions"]


def test_load_model_loads_a_moved_lora_adapter(moved_adapter):
    """Needs biolab.model.load_model to resolve the adapter's relative base path against the adapter
    folder (peft alone resolves it against the working directory)."""
    adapter, logits, x = moved_adapter
    model, _ = load_model(adapter)
    assert torch.allclose(model(input_ids=x).logits, logits, atol=1e-5)


def test_finetune_passes_wandb_meta(pretrained, tmp_path, monkeypatch):
    import wandb

    root, corpus = pretrained
    seen = []

    class Run:
        summary = {}

        def log(self, row, step):
            pass

        def finish(self):
            pass

    monkeypatch.setattr(wandb, "init", lambda **kw: seen.append(kw) or Run())
    monkeypatch.setenv("WANDB_MODE", "offline")
    meta = {"name": "ft/lora", "group": "demo", "tags": ["lora"], "config": {"experiment": "demo"}}
    finetune(tmp_path, root / "model", corpus, FinetuneConfig(lora_r=4, embed_r=0),
             ft_train(steps=1, ckpt_every=0, wandb="offline"), progress=False, wandb_meta=meta)  # fmt: skip
    (kw,) = seen
    assert (kw["name"], kw["group"], kw["tags"]) == ("ft/lora", "demo", ["lora"])
    assert kw["config"]["experiment"] == "demo" and kw["config"]["finetune"]["lora_r"] == 4


@pytest.mark.parametrize("case", ["not_a_run", "unwritable"])
def test_cli_refuses_an_unusable_out_in_one_line(pretrained, tmp_path, case):
    root, _ = pretrained
    out, message = unusable_out(tmp_path, case, "ft")
    args = [f"pretrained={root / 'model'}", f"out={out}", "finetune.train.steps=1", "eval.max_people=2",
            "finetune.train.wandb=disabled", "progress=false"]  # fmt: skip
    r = run_in_fork([ROOT / "scripts" / "finetune.py", *args], timeout=600,
                    env={**os.environ, "OMP_NUM_THREADS": "1"})  # fmt: skip
    assert r.returncode == 2 and r.stderr.startswith("error:") and message in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    if case == "not_a_run":
        assert [p.name for p in out.iterdir()] == ["notes.txt"]


# scripts/finetune.py run in-process (its undecorated main on a composed config): issue 27's cases
FT_ARGS = ["finetune.train.steps=2", "finetune.train.batch_size=4", "finetune.train.ckpt_every=0",
           "finetune.train.wandb=disabled", "finetune.lora_r=2", "finetune.embed_r=8", "eval.max_people=2",
           "progress=false"]  # fmt: skip


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(f"{name}_script", ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def ft_script(monkeypatch):
    """scripts/finetune.py with its trainings and evaluations counted: ``calls(*overrides)`` runs it."""
    module = load_script("finetune")
    counts = {"finetune": 0, "evaluate_qa": 0}
    for name in counts:
        real = getattr(module, name)

        def counted(*a, real=real, name=name, **kw):
            counts[name] += 1
            return real(*a, **kw)

        monkeypatch.setattr(module, name, counted)

    def calls(*overrides):
        before = dict(counts)
        module.main.__wrapped__(compose("finetune", [*FT_ARGS, *overrides]))
        return {k: counts[k] - before[k] for k in counts}

    calls.module = module
    return calls


def snapshot(folder: Path) -> dict:
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def own_run(pretrained, tmp_path):
    """A copy of the pretraining run, to point a finetune at it (and at its own folders as out)."""
    root, _ = pretrained
    return Path(shutil.copytree(root, tmp_path / "pre", ignore=shutil.ignore_patterns("checkpoints")))


@pytest.mark.parametrize(
    ("out", "message"),
    [
        (".", "out={run} holds pretrained={run}/model, an input of this command"),
        ("model", "out={run}/model is pretrained={run}/model"),
        ("model/ft", "out={run}/model/ft is inside pretrained={run}/model"),
        ("data", "out={run}/data is data_dir={run}/data"),
    ],
)
def test_finetune_never_writes_over_its_own_inputs(ft_script, own_run, out, message):
    """Issue 27: pretrained=RUN/model out=RUN overwrite=true replaced the base model with the adapter."""
    before = snapshot(own_run)
    out = (own_run / out).resolve()
    with pytest.raises(ConfigError, match=re.escape(message.format(run=own_run))):
        ft_script(f"pretrained={own_run / 'model'}", f"out={out}", "overwrite=true")
    assert snapshot(own_run) == before


def test_finetune_refuses_another_kind_of_run_as_out(ft_script, pretrained, own_run):
    root, corpus = pretrained
    before = snapshot(own_run)
    message = f"out={own_run} holds a pretraining run (its config.json has no finetune key)"
    with pytest.raises(ConfigError, match=re.escape(message)):
        ft_script(f"pretrained={root / 'model'}", f"out={own_run}", "overwrite=true")
    with pytest.raises(ConfigError, match=re.escape(message)):
        ft_script(
            f"pretrained={root / 'model'}",
            f"out={own_run}",
            "overwrite=true",
            "grid={finetune.lora_r: [2, 4]}",
        )
    with pytest.raises(ConfigError, match=re.escape(message)):  # the library call refuses it too
        finetune(own_run, root / "model", corpus, FinetuneConfig(lora_r=2), ft_train(steps=1), overwrite=True)
    assert snapshot(own_run) == before


def test_a_finetune_killed_in_its_evaluation_only_evaluates_again(
    ft_script, pretrained, tmp_path, monkeypatch
):
    """Issue 27: rerunning after a failed evaluation said "holds a finished run; pass overwrite=true"."""
    root, _ = pretrained
    args = [f"pretrained={root / 'model'}", f"out={tmp_path / 'ft'}"]

    def killed(*a, **kw):
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(ft_script.module, "evaluate_qa", killed)
        with pytest.raises(KeyboardInterrupt):
            ft_script(*args)
    trained = snapshot(tmp_path / "ft" / "model")
    assert ft_script(*args) == {"finetune": 0, "evaluate_qa": 1}
    assert snapshot(tmp_path / "ft" / "model") == trained
    assert (tmp_path / "ft" / "eval" / "metrics.json").is_file()


def test_a_finished_finetune_is_reused_unless_asked_otherwise(
    ft_script, pretrained, own_run, tmp_path, capsys
):
    root, _ = pretrained
    args = [f"pretrained={root / 'model'}", f"out={tmp_path / 'ft'}"]
    assert ft_script(*args) == {"finetune": 1, "evaluate_qa": 1}
    done = snapshot(tmp_path / "ft")
    capsys.readouterr()
    assert ft_script(*args, "finetune.train.log_every=5") == {"finetune": 0, "evaluate_qa": 0}
    assert "trained and evaluated before" in capsys.readouterr().out and snapshot(tmp_path / "ft") == done
    # another evaluation of the same model; then another training only on request
    assert ft_script(*args, "eval.max_people=3") == {"finetune": 0, "evaluate_qa": 1}
    with pytest.raises(ConfigError, match="run trained with other pretrained;"):
        ft_script(f"pretrained={own_run / 'model'}", f"out={tmp_path / 'ft'}")
    other = tmp_path / "other"
    write_dataset(DataConfig(n_people=40, seed=1), other, progress=False)
    with pytest.raises(ConfigError, match="run trained with other data_dir;"):
        ft_script(*args, f"data_dir={other}")
    with pytest.raises(ConfigError, match="run trained with other finetune.lora_r, finetune.train.lr;"):
        ft_script(*args, "finetune.lora_r=4", "finetune.train.lr=1e-3")
    assert ft_script(*args, "finetune.lora_r=4", "overwrite=true") == {"finetune": 1, "evaluate_qa": 1}
    assert json.loads((tmp_path / "ft" / "config.json").read_text())["finetune"]["lora_r"] == 4


def test_a_killed_grid_trains_only_what_is_unfinished(ft_script, pretrained, tmp_path, monkeypatch):
    """Issue 27: a killed grid refused on its finished first point, so it restarted from zero."""
    root, _ = pretrained
    args = [f"pretrained={root / 'model'}", f"out={tmp_path / 'ft'}", "grid={finetune.lora_r: [2, 4]}"]
    real = ft_script.module.evaluate_qa

    def killed_on_the_second(model, tokenizer, data_dir, out, *a, **kw):
        if "lora_r-4" in str(out):
            raise KeyboardInterrupt
        return real(model, tokenizer, data_dir, out, *a, **kw)

    with monkeypatch.context() as m:
        m.setattr(ft_script.module, "evaluate_qa", killed_on_the_second)
        with pytest.raises(KeyboardInterrupt):
            ft_script(*args)
    first = snapshot(tmp_path / "ft" / "grid" / "lora_r-2")
    assert ft_script(*args) == {"finetune": 0, "evaluate_qa": 1}
    assert snapshot(tmp_path / "ft" / "grid" / "lora_r-2") == first
    grid = json.loads((tmp_path / "ft" / "grid.json").read_text())
    assert set(grid["runs"]) == {"lora_r-2", "lora_r-4"}
    assert ft_script(*args) == {"finetune": 0, "evaluate_qa": 0}


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("eval.num_beams=0", "eval.num_beams must be >= 1, got 0"),
        ("eval.batch_size=0", "eval.batch_size must be >= 1, got 0"),
        ("eval.max_people=-1", "eval.max_people must be null or >= 1, got -1"),
        ("grid={finetune.bogus: [1, 2]}", "grid key 'finetune.bogus' is not a finetune key; valid keys:"),
        ("grid={eval.num_beams: [1, 4]}", "grid key 'eval.num_beams' is not a finetune key"),
        ("grid=[1,2]", "grid must map finetune keys to lists of values"),
        ("grid={finetune.lora_r: []}", "grid.finetune.lora_r must list distinct values, at least one"),
        ("pretrained={root}", "pretrained={root} is not a model folder (a config.json without model_type); "
                              "pass pretrained={root}/model"),
    ],
)  # fmt: skip
def test_bad_finetune_input_is_refused_before_any_work(ft_script, pretrained, tmp_path, override, message):
    root, _ = pretrained
    override, message = (s.replace("{root}", str(root)) for s in (override, message))
    with pytest.raises(ConfigError, match=re.escape(message)):
        ft_script(f"pretrained={root / 'model'}", f"out={tmp_path / 'ft'}", override)
    assert list(tmp_path.iterdir()) == []


def test_finetune_refuses_a_biod_dataset_before_training(ft_script, pretrained, tmp_path):
    """Issue 27: a bioD data_dir trained, then failed in its evaluation with KeyError: 'birth_date'."""
    root, _ = pretrained
    biod = tmp_path / "biod"
    write_dataset(DataConfig(style="bioD", n_people=6, biod={"K": 2, "C": 2, "D": 4, "L": 1, "T": 4}), biod,
                  progress=False)  # fmt: skip
    with pytest.raises(ConfigError, match=f"data_dir={biod} is a bioD dataset"):
        ft_script(f"pretrained={root / 'model'}", f"data_dir={biod}", f"out={tmp_path / 'ft'}")
    assert not (tmp_path / "ft").exists()


def test_a_masked_lm_finetune_refuses_beam_search_before_training(
    ft_script, pretrained, tmp_path, monkeypatch
):
    """It trained first, then failed in its evaluation."""
    root, _ = pretrained
    monkeypatch.setattr(ft_script.module, "saved_masked_lm", lambda path: True)
    with pytest.raises(
        ConfigError, match="a masked LM fills its answer's masks at once: use eval.num_beams=1"
    ):
        ft_script(f"pretrained={root / 'model'}", f"out={tmp_path / 'ft'}", "eval.num_beams=4")
    assert list(tmp_path.iterdir()) == []
