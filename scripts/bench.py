"""Benchmarks (measurements, never tests):

    python scripts/bench.py [data]      generation of bioS_multi5_permute_fullname, 100k people, and the
                                        plain-Python yardstick (scripts/bench_reference_generate.py)
    python scripts/bench.py tokenize    tokenizing that dataset (500k bios): BPE training + encoding
    python scripts/bench.py pretrain    our training loop vs the HF Trainer vs a plain PyTorch loop
    python scripts/bench.py step        one CPU training step: fp32/bf16 x SDPA/eager (x compile), 1 and 2
                                        threads, its biggest ops, our loop in fp32 vs bf16, and the roofline
    python scripts/bench.py roofline    the matmul roofline at the model's own shapes (fp32, bf16; 1 and 2
                                        threads) and our loop's share of it (--set model.n_layer=8 ...)
    python scripts/bench.py fresh       train.fresh_bios: rendering + tokenizing + packing fresh bios into
                                        windows vs our loop's training tokens/s on stored and fresh bios
                                        (--data bioS_fresh --bios 20000)
    python scripts/bench.py eval        batched QA generation vs one generate call per question
    python scripts/bench.py probe       fast P-probes (every layer x position x task) incl. hidden states
    python scripts/bench.py stack       K small models trained together with torch.func (stacked, vmapped)
                                        vs one after the other (--stack 4, --model gpt2_2_2 shapes)
Each prints one JSON object; --out FILE also writes it there.
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from omegaconf import OmegaConf

from biolab.cli import compose
from biolab.data.dataset import DataConfig, write_dataset
from biolab.io import atomic_write_text
from biolab.status import device_name, git_commit, versions


def peak_rss_mb() -> dict:
    kb = {
        "self": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        "children": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss,
    }
    return {k: round(v / 1024, 1) for k, v in kb.items()}


def cpu_seconds() -> float:
    """User + system seconds of this process and its finished children (the workers)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def data_config(preset: str, n_people: int) -> DataConfig:
    data = compose("generate", [f"data={preset}", f"data.n_people={n_people}"]).data
    return DataConfig.from_dict(OmegaConf.to_container(data, resolve=True))


REFERENCE = "bioS_multi5_permute_fullname"  # the one dataset the yardstick writes


def bench_reference(cfg: DataConfig, tmp: Path, data: Path) -> dict:
    """The yardstick's own seconds for the same bios.jsonl (a separate process, run after ours)."""
    script = Path(__file__).with_name("bench_reference_generate.py")
    cmd = [sys.executable, str(script), f"--n-people={cfg.n_people}", f"--seed={cfg.seed}",
           f"--out={tmp / 'reference.jsonl'}"]  # fmt: skip
    out = subprocess.run([*cmd, f"--check={data}"], capture_output=True, text=True, check=True).stdout
    return json.loads(out)


def bench_data(args, tmp: Path) -> dict:
    cfg = data_config(args.data, args.n_people)
    out = Path(args.keep) if args.keep else tmp / "data"
    parts: dict = {}
    load = os.getloadavg()[0]  # the machine is shared: a high load stretches the wall seconds
    start, cpu = time.perf_counter(), cpu_seconds()
    meta = write_dataset(cfg, out, overwrite=bool(args.keep), workers=args.workers, timings=parts)
    seconds, cpu = time.perf_counter() - start, cpu_seconds() - cpu
    result = {
        "bios": meta["counts"]["bios"],
        "workers": args.workers,
        "seconds": round(seconds, 2),
        "cpu_seconds": round(cpu, 2),
        "load_average_1m": round(load, 2),
        "seconds_by_part": {k: round(v, 2) for k, v in parts.items()},
        "bios_per_second": round(meta["counts"]["bios"] / seconds),
        "peak_rss_mb": peak_rss_mb(),
        "dataset_mb": round(sum(f.stat().st_size for f in out.iterdir()) / 2**20, 1),
    }
    if args.data == REFERENCE and not args.no_reference:
        ref = bench_reference(cfg, tmp, out)
        result["reference"] = {
            "seconds": ref["seconds"],
            "cpu_seconds": ref["cpu_seconds"],
            "same_bytes": ref["same_bytes_as_biolab"],
            "writes": "bios.jsonl only",
        }
        result["ratio_to_reference"] = round(seconds / ref["seconds"], 2)
        result["cpu_ratio_to_reference"] = round(cpu / ref["cpu_seconds"], 2)
    return result


def bench_tokenize(args, tmp: Path) -> dict:
    from biolab.data.tokens import tokenize_dataset

    data = Path(args.keep) if args.keep else tmp / "data"
    if not (data / "meta.json").is_file():
        write_dataset(data_config(args.data, args.n_people), data, workers=args.workers, progress=False)
    start, phases = time.perf_counter(), {}
    meta = tokenize_dataset(data, tmp / "corpus", vocab_size=args.vocab_size, timings=phases)
    return {
        "seconds": phases,
        "bios": meta["counts"]["bios"],
        "qa": meta["counts"]["qa"],
        "vocab_size": args.vocab_size,
        "seconds_train_and_tokenize_all": round(time.perf_counter() - start, 2),
        "tokens_per_bio": meta["tokens_per_bio"],
        "peak_rss_mb": peak_rss_mb(),
    }


def _training_inputs(args, tmp: Path):
    """(corpus, model config, train config) of the training benches, from the command line."""
    from biolab.data.tokens import Corpus, prepare_corpus
    from biolab.model import ModelConfig
    from biolab.train.config import TrainConfig

    cfg = compose("pretrain", [f"model={args.model}", "train=tiny", f"train.batch_size={args.batch_size}",
                               f"train.ctx={args.ctx}", f"train.steps={args.steps}", *args.set])  # fmt: skip
    corpus = Corpus(prepare_corpus(tmp, data_config(args.data, args.n_people), vocab_size=args.vocab_size))
    return (
        corpus,
        ModelConfig.from_dict(OmegaConf.to_container(cfg.model)),
        TrainConfig.from_dict(OmegaConf.to_container(cfg.train)),
    )


def bench_pretrain_cmd(args, tmp: Path, emit=None) -> dict:
    from biolab.train.bench import bench_pretrain

    return bench_pretrain(*_training_inputs(args, tmp), warmup=args.warmup, repeats=args.repeats, emit=emit)


def bench_step_cmd(args, tmp: Path) -> dict:
    from biolab.train.bench import bench_cpu_step

    inputs = _training_inputs(args, tmp)
    return {**bench_cpu_step(*inputs, warmup=args.warmup), "roofline": bench_roofline_cmd(args, tmp, inputs)}


def bench_roofline_cmd(args, tmp: Path, inputs=None) -> dict:
    """The matmul roofline at the model's own shapes, 1 and 2 threads, fp32 and bf16, and our loop
    beside it (biolab.train.roofline)."""
    from biolab.train.bench import bench_roofline

    return bench_roofline(*(inputs or _training_inputs(args, tmp)), warmup=args.warmup)


def bench_fresh_cmd(args, tmp: Path) -> dict:
    """The fresh bio stream alone (``--bios`` bios rendered, tokenized and cut into windows, after its
    set-up: the people read, the tokenizer loaded) and the stored bios' WindowStream, against our loop's
    training tokens/s (same model, batch, ctx) on stored bios and on fresh ones, which pays for both."""
    import numpy as np
    import torch

    from biolab.data.fresh import fresh_bio_stream
    from biolab.data.packing import WindowStream
    from biolab.train.bench import bench_ours

    corpus, model_cfg, cfg = _training_inputs(args, tmp)
    start = time.perf_counter()
    fresh = fresh_bio_stream(corpus, cfg.ctx, cfg.seed)
    setup = time.perf_counter() - start
    per_bio = fresh.bios.mean_tokens(corpus.eos)
    calls = int(np.ceil(args.bios * per_bio / (cfg.ctx * cfg.batch_size)))  # a batch a call, as training asks
    stored = WindowStream(corpus.bio_ids, corpus.bios["offsets"], corpus.eos, cfg.ctx, cfg.seed)
    loader = {}
    for name, stream in (("fresh", fresh), ("stored", stored)):
        start = time.perf_counter()
        for _ in range(calls):
            stream.next_windows(cfg.batch_size)
        loader[name] = round(calls * cfg.batch_size * cfg.ctx / (time.perf_counter() - start))
    training = {
        "stored": round(bench_ours(corpus, model_cfg, cfg, args.warmup)),
        "fresh": round(bench_ours(corpus, model_cfg, replace(cfg, fresh_bios=True), args.warmup)),
    }
    return {
        "model": model_cfg.name, "batch_size": cfg.batch_size, "ctx": cfg.ctx,
        "steps_timed": cfg.steps - args.warmup, "bios": args.bios, "tokens_per_bio": round(per_bio, 2),
        "fresh_setup_seconds": round(setup, 2), "loader_tokens_per_s": loader,
        "fresh_bios_per_s": round(loader["fresh"] / per_bio), "training_tokens_per_s": training,
        "fresh_loader_over_training": round(loader["fresh"] / training["stored"], 1),
        "threads": torch.get_num_threads(), "load_average_1m": round(os.getloadavg()[0], 2),
    }  # fmt: skip


def bench_eval_cmd(args, tmp: Path, emit=None) -> dict:
    """QA generation on pick_device's device: every question in batches (``--batch-size``, default
    the evaluation's own batch there), then the first ``--single`` one generate call each, same
    model and prompts; questions/s and whether the answers agree."""
    from biolab.data.qa import format_prompt
    from biolab.data.tokens import Corpus, prepare_corpus
    from biolab.device import pick_device
    from biolab.eval.generate import generate_answers
    from biolab.eval.qa import EvalConfig, qa_items
    from biolab.model import ModelConfig, build_model

    device = pick_device()
    corpus = Corpus(prepare_corpus(tmp, data_config(args.data, args.n_people), vocab_size=args.vocab_size))
    model_cfg = ModelConfig.from_dict(
        OmegaConf.to_container(compose("pretrain", [f"model={args.model}"]).model)
    )
    model = build_model(model_cfg, corpus.vocab_size, corpus.eos, corpus.pad, corpus.eos).eval().to(device)
    prompts = [format_prompt(q["question"]) for q in qa_items(tmp / "data", ("train", "test"))][
        : args.questions
    ]
    tok = corpus.tokenizer()
    batch = args.batch_size or EvalConfig().batch_size_on(device)
    result = {"model": args.model, "torch_device": device, "questions": len(prompts), "batch_size": batch,
              "max_new_tokens": 16}  # fmt: skip
    _sync(device)
    start = time.perf_counter()
    batched = generate_answers(model, tok, prompts, batch_size=batch, max_new_tokens=16, progress=False)
    _sync(device)
    t_batched = time.perf_counter() - start
    result.update(seconds_batched=round(t_batched, 3), questions_per_s=round(len(prompts) / t_batched, 1))
    if emit is not None:
        emit(result)
    few = prompts[: args.single]
    start = time.perf_counter()
    single = [
        generate_answers(model, tok, [p], batch_size=1, max_new_tokens=16, progress=False)[0] for p in few
    ]
    _sync(device)
    t_single = time.perf_counter() - start
    per_question = t_single / max(1, len(few))
    result.update(single_questions=len(few), seconds_one_at_a_time=round(t_single, 3),
                  speedup=round(per_question / (t_batched / len(prompts)), 1),
                  same_predictions=batched[: len(few)] == single)  # fmt: skip
    return result


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize(device)


def bench_probe_cmd(args, tmp: Path) -> dict:
    """p_fast over n_people: state extraction + every (layer, position, task) probe, with and
    without the two controls. Speed does not depend on training, so the model is freshly built."""
    from biolab.data.tokens import Corpus, prepare_corpus
    from biolab.model import ModelConfig, build_model
    from biolab.probe.probes import ProbeConfig, run_probe

    corpus = Corpus(prepare_corpus(tmp, data_config(args.data, args.n_people), vocab_size=args.vocab_size))
    model_cfg = ModelConfig.from_dict(
        OmegaConf.to_container(compose("pretrain", [f"model={args.model}"]).model)
    )
    build_model(model_cfg, corpus.vocab_size, corpus.eos, corpus.pad, corpus.eos).save_pretrained(
        tmp / "model"
    )
    corpus.tokenizer().save_pretrained(str(tmp / "model"))
    probe = OmegaConf.to_container(compose("probe", ["probe=p_fast"]).probe)
    out = {}
    for label, controls in (("probe", []), ("probe_and_controls", ["shuffled", "random_init"])):
        cfg = ProbeConfig.from_dict({**probe, "max_people": None, "controls": controls})
        start = time.perf_counter()
        rows = run_probe(tmp / "model", tmp / "data", cfg, tmp / label, plots=False)
        out[label] = {"seconds": round(time.perf_counter() - start, 2), "probes": len(rows)}
    return {"model": args.model, "solver": probe["linear"]["solver"], "epochs": probe["linear"]["epochs"],
            "max_positions": probe["max_positions"], **out}  # fmt: skip


def bench_stack_cmd(args, tmp: Path) -> dict:
    """cap_fig1's gpt2-2-2 shape (2 layers, 2 heads, 32 dims; 1024 tokens) unless --model names a preset."""
    import torch

    from biolab.model import ModelConfig
    from biolab.train.bench import bench_stacked
    from biolab.train.config import TrainConfig

    torch.set_num_threads(args.threads)
    if args.model == "tiny":
        model_cfg = ModelConfig(name="gpt2-2-2", n_layer=2, n_head=2, d_model=32)
    else:
        model_cfg = ModelConfig.from_dict(
            OmegaConf.to_container(compose("pretrain", [f"model={args.model}"]).model)
        )
    cfg = TrainConfig(batch_size=args.batch_size, ctx=args.ctx, steps=args.steps)
    out = bench_stacked(model_cfg, 1024, args.stack, cfg, args.warmup)
    return {
        "model": model_cfg.name,
        "threads": args.threads,
        "batch_size": args.batch_size,
        "ctx": args.ctx,
        **out,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument(
        "what",
        nargs="?",
        default="data",
        choices=["data", "tokenize", "pretrain", "step", "roofline", "eval", "probe", "stack", "fresh"],
    )
    ap.add_argument("--data", default="bioS_multi5_permute_fullname")
    ap.add_argument("--n-people", type=int, default=None, help="default 100000 (pretrain: 1000)")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--vocab-size", type=int, default=2048)
    ap.add_argument("--keep", default=None, help="data/tokenize: keep or reuse the dataset here")
    ap.add_argument("--no-reference", action="store_true", help="data: skip the plain-Python yardstick")
    ap.add_argument("--model", default="tiny")
    ap.add_argument("--set", nargs="*", default=[], help="more pretrain overrides, e.g. model.n_layer=8")
    ap.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help="training: sequences per step (32); eval: questions per generate call "
        "(the evaluation's: eval.batch_size on a CPU, eval.gpu_batch_size on a GPU)",
    )
    ap.add_argument("--ctx", type=int, default=128)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=3, help="pretrain: runs of each loop, interleaved")
    ap.add_argument("--questions", type=int, default=300, help="eval: questions to answer in batches")
    ap.add_argument("--single", type=int, default=64, help="eval: of those, answered one generate call each")
    ap.add_argument("--stack", type=int, default=4, help="stack: models trained together")
    ap.add_argument("--threads", type=int, default=1, help="stack: torch threads")
    ap.add_argument("--bios", type=int, default=20_000, help="fresh: bios the loader renders")
    ap.add_argument("--out", default=None, help="also write the JSON result here")
    args = ap.parse_args()
    if args.batch_size is None and args.what != "eval":
        args.batch_size = 32
    if args.n_people is None:
        args.n_people = (
            1000 if args.what in ("pretrain", "step", "roofline", "eval", "probe", "fresh") else 100_000
        )
    run = {
        "data": bench_data,
        "tokenize": bench_tokenize,
        "pretrain": bench_pretrain_cmd,
        "step": bench_step_cmd,
        "roofline": bench_roofline_cmd,
        "eval": bench_eval_cmd,
        "probe": bench_probe_cmd,
        "stack": bench_stack_cmd,
        "fresh": bench_fresh_cmd,
    }[args.what]
    start = time.time()

    def record(result: dict, finished: bool) -> str:
        """The result with its provenance, written to --out (atomically) at once."""
        text = json.dumps({
            "bench": args.what, "data": args.data, "n_people": args.n_people, **result, "finished": finished,
            "command": "python scripts/bench.py " + " ".join(sys.argv[1:]), "git_commit": git_commit(),
            "device": device_name(), "wall_seconds": round(time.time() - start, 1), **versions(),
        }, indent=2)  # fmt: skip
        if args.out:
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(Path(args.out), text + "\n")
        return text

    # pretrain and eval hand over what they measured so far: a bench cut short still leaves it
    partial = {"emit": lambda result: record(result, False)} if args.what in ("pretrain", "eval") else {}
    with tempfile.TemporaryDirectory() as tmp:
        result = run(args, Path(tmp), **partial)
    print(record(result, True))


if __name__ == "__main__":
    main()
