from biolab.data.dataset import DataConfig
from biolab.data.tokens import Corpus, prepare_corpus
from biolab.model import ModelConfig
from biolab.train.bench import bench_pretrain
from biolab.train.config import TrainConfig


def test_pretrain_bench_reports_all_three_loops(tmp_path):
    corpus = Corpus(prepare_corpus(tmp_path, DataConfig(n_people=40), vocab_size=300))
    model = ModelConfig(name="test", n_layer=1, n_head=2, d_model=32, max_positions=64)
    partial = []
    cfg = TrainConfig(steps=4, batch_size=2, ctx=16, warmup_steps=1)
    result = bench_pretrain(corpus, model, cfg, warmup=2, emit=partial.append)
    assert set(result["tokens_per_s"]) == {"biolab", "hf_trainer", "plain_torch"}
    assert all(v > 0 for v in result["tokens_per_s"].values())
    assert result["torch_device"] == "cpu" and result["mfu"] is None  # no known peak for a CPU
    # what each loop measured is handed over as soon as it is measured
    assert [sorted(p["tokens_per_s"]) for p in partial] == [
        ["biolab"],
        ["biolab", "hf_trainer"],
        ["biolab", "hf_trainer", "plain_torch"],
    ]


def test_eval_bench_writes_its_json_as_each_part_finishes(tmp_path):
    import json
    import subprocess
    import sys
    from pathlib import Path

    out = tmp_path / "eval.json"
    script = Path(__file__).resolve().parent.parent / "scripts" / "bench.py"
    args = ["eval", "--model", "tiny", "--n-people", "12", "--vocab-size", "300", "--questions", "10",
            "--single", "2", "--out", str(out)]  # fmt: skip
    r = subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    result = json.loads(out.read_text())
    assert result["finished"] and result["torch_device"] == "cpu" and result["batch_size"] == 128
    assert result["questions"] == 10 and result["single_questions"] == 2 and result["same_predictions"]


def test_cpu_step_bench_times_each_variant_and_names_the_biggest_ops(tmp_path):
    from biolab.train.bench import STEP_VARIANTS, bench_cpu_step

    corpus = Corpus(prepare_corpus(tmp_path, DataConfig(n_people=40), vocab_size=300))
    model = ModelConfig(name="test", n_layer=1, n_head=2, d_model=32, max_positions=64)
    cfg = TrainConfig(steps=2, batch_size=2, ctx=16, warmup_steps=1, log_every=1)
    plain = [v for v in STEP_VARIANTS if not v[3]]  # compiling takes a minute
    result = bench_cpu_step(corpus, model, cfg, warmup=1, threads=(1,), top_ops=3, variants=plain)
    assert set(result["ms_per_step"]["1 threads"]) == {v[0] for v in plain}
    assert all(v > 0 for v in result["ms_per_step"]["1 threads"].values())
    assert set(result["top_ops_pct_of_cpu_time"]) == {"fp32 sdpa", "bf16 eager"}
    assert all(len(o) == 3 for o in result["top_ops_pct_of_cpu_time"].values())
    assert result["our_loop_bf16_over_fp32"] > 0


def test_stacked_bench_trains_k_models_together_and_one_after_another():
    from biolab.model import ModelConfig
    from biolab.train.bench import bench_stacked
    from biolab.train.config import TrainConfig

    cfg = TrainConfig(batch_size=2, ctx=16, steps=2)
    result = bench_stacked(ModelConfig(n_layer=1, n_head=1, d_model=16), 64, 3, cfg, warmup=1)
    assert result["models"] == 3 and result["tokens_per_s_stacked"] > 0
    assert result["tokens_per_s_one_after_another"] > 0
