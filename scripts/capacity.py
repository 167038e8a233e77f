"""Bits of knowledge a model stores (Part 3.3): python scripts/capacity.py --help"""

import sys
from pathlib import Path

import numpy as np
from omegaconf import OmegaConf

from biolab.cli import hydra_main
from biolab.data.dataset import iter_jsonl, verify_dataset
from biolab.data.tokens import Corpus, tokenize_texts
from biolab.errors import ConfigError
from biolab.eval.capacity import CapacityConfig, measure_with_quantized
from biolab.io import check_writable, write_json
from biolab.model import check_training_data, is_masked_lm, load_model, saved_masked_lm


@hydra_main("capacity")
def main(cfg) -> None:
    """Bits by Definition 4.3 (p1 on the name, p2 on the values; R = bits / P) of a causal model on a
    dataset it was pretrained on, also after int8 / int4 rounding.

    python scripts/capacity.py model_dir=RUN/model data_dir=RUN/data corpus_dir=RUN/corpus
    python scripts/capacity.py model_dir=M data_dir=D quantize=[]     (P from the dataset's bios)
    Writes capacity.json into out (default: MODEL_DIR/../capacity) and prints a line per precision.
    """
    for key in ("model_dir", "data_dir"):
        if OmegaConf.is_missing(cfg, key):
            raise ConfigError(f"{key}=... is required")
    plain = OmegaConf.to_container(cfg, resolve=True)
    c = CapacityConfig.from_dict({k: plain[k] for k in ("max_people", "batch_size", "group_size", "quantize")
                                  })  # fmt: skip
    out = check_writable(Path(cfg.out) if cfg.out else Path(cfg.model_dir).parent / "capacity")
    # As the pipeline pairs them: the bits of a model are read on the dataset it was trained on.
    meta = verify_dataset(cfg.data_dir)
    warning = check_training_data(cfg.model_dir, meta, cfg.allow_other_data)
    if warning:
        print(warning, file=sys.stderr)
    corpus = Corpus(cfg.corpus_dir) if cfg.corpus_dir else None
    if corpus is not None and corpus.meta.get("data_sha256") != meta["sha256"] and not cfg.allow_other_data:
        raise ConfigError(f"corpus_dir={cfg.corpus_dir} was not tokenized from data_dir={cfg.data_dir}")
    masked = ConfigError(f"{cfg.model_dir} is a masked LM: capacity reads a causal model's bio loss")
    if saved_masked_lm(cfg.model_dir):
        raise masked
    model, tokenizer = load_model(cfg.model_dir)
    if is_masked_lm(model):  # an adapter on a masked LM: its type shows once loaded
        raise masked
    if corpus is not None:
        used = corpus.bio_ids
    else:  # the tokens the data holds, from its bios
        texts = [b["text"] for b in iter_jsonl(Path(cfg.data_dir) / "bios.jsonl")]
        used = np.unique(tokenize_texts(tokenizer, texts)[0])
    rows = measure_with_quantized(model, tokenizer, cfg.data_dir, used, c, progress=True)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "capacity.json", {"model_dir": str(cfg.model_dir), "data_dir": str(cfg.data_dir),
                                       "rows": rows})  # fmt: skip
    for r in rows:
        print(f"{r['quant']}: N={r['N']} P={r['P']:,} p1={r['p1']:.3f} p2={r['p2']:.3f} "
              f"bits={r['bits']:,.0f} R={r['R']:.3f} R_max={r['R_max']:.3f}")  # fmt: skip
    print(f"wrote {out / 'capacity.json'}")


if __name__ == "__main__":
    main()
