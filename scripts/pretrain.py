"""Pretrain a model: python scripts/pretrain.py --help (several GPUs: accelerate launch ...)."""

import json

from omegaconf import OmegaConf

from biolab.cli import hydra_main
from biolab.data.dataset import DataConfig, read_meta
from biolab.data.tokens import Corpus, TokenizerConfig, prepare_corpus
from biolab.errors import ConfigError
from biolab.model import ModelConfig
from biolab.train.config import TrainConfig
from biolab.train.pretrain import make_accelerator, micro_batches, pretrain
from biolab.train.run_folder import check_run_dir


@hydra_main("pretrain")
def main(cfg) -> None:
    """Pretrain a model on biographies (BIO, or mixed BIO+QA with train.qa_ratio > 0).

    python scripts/pretrain.py data=<preset> model=<preset> train=<preset> out=RUN
    python scripts/pretrain.py data_dir=DATASET model=tiny train=tiny out=RUN
    accelerate launch --num_processes 2 scripts/pretrain.py ...   (several GPUs or CPU processes)
    Re-running the same command resumes from RUN's last intact checkpoint (with another training
    config it stops and names the keys; overwrite=true starts over); RUN/model loads with
    AutoModelForCausalLM.from_pretrained and AutoTokenizer.from_pretrained. overwrite=true retrains a
    finished run in a hidden .RUN.overwrite beside it, moved in only once done. RUN must be new, empty,
    or a run of this script.
    """

    if OmegaConf.is_missing(cfg, "out"):
        raise ConfigError("out=RUN is required (the run folder)")
    container = OmegaConf.to_container(cfg, resolve=True)
    model_cfg = ModelConfig.from_dict(container["model"])
    train_cfg = TrainConfig.from_dict(container["train"])
    data_cfg = DataConfig.from_dict(container["data"])
    TokenizerConfig.from_dict(container["tokenizer"])
    if train_cfg.ctx > model_cfg.max_positions:
        raise ConfigError(f"train.ctx={train_cfg.ctx} exceeds model.max_positions={model_cfg.max_positions}")
    if cfg.data_dir is not None:
        read_meta(cfg.data_dir)
    check_run_dir(cfg.out, cfg.overwrite)
    accelerator = make_accelerator(train_cfg)
    micro_batches(train_cfg, accelerator.num_processes)  # fail before any work
    with accelerator.main_process_first():
        corpus_dir = prepare_corpus(
            cfg.out, data_cfg, cfg.data_dir, cfg.tokenizer.path, cfg.tokenizer.vocab_size
        )
    corpus = Corpus(corpus_dir)
    final = pretrain(cfg.out, corpus, model_cfg, train_cfg, accelerator, cfg.overwrite, progress=cfg.progress)
    if accelerator.is_main_process:
        print(json.dumps(final, indent=1))
        print(f"model: {cfg.out}/model")


if __name__ == "__main__":
    main()
