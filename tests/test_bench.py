from biolab.data.dataset import DataConfig
from biolab.data.tokens import Corpus, prepare_corpus
from biolab.model import ModelConfig
from biolab.train.bench import bench_pretrain
from biolab.train.pretrain import TrainConfig


def test_pretrain_bench_reports_all_three_loops(tmp_path):
    corpus = Corpus(prepare_corpus(tmp_path, DataConfig(n_people=40), vocab_size=300))
    model = ModelConfig(name="test", n_layer=1, n_head=2, d_model=32, max_positions=64)
    result = bench_pretrain(
        corpus, model, TrainConfig(steps=4, batch_size=2, ctx=16, warmup_steps=1), warmup=2
    )
    assert set(result["tokens_per_s"]) == {"biolab", "hf_trainer", "plain_torch"}
    assert all(v > 0 for v in result["tokens_per_s"].values())
