"""Benchmark dataset generation: wall time and peak memory (a measurement, never a test).

python scripts/bench.py                        # bioS_multi5_permute_fullname, 100k people
python scripts/bench.py --data bioR_multi5 --n-people 20000 --workers 2
"""

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

from omegaconf import OmegaConf

from biolab.cli import compose
from biolab.data.dataset import DataConfig, write_dataset


def peak_rss_mb() -> dict:
    kb = {
        "self": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        "children": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss,
    }
    return {k: round(v / 1024, 1) for k, v in kb.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--data", default="bioS_multi5_permute_fullname")
    ap.add_argument("--n-people", type=int, default=100_000)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--out", default=None, help="keep the dataset here (default: a temp dir)")
    args = ap.parse_args()

    data = compose("generate", [f"data={args.data}", f"data.n_people={args.n_people}"]).data
    cfg = DataConfig.from_dict(OmegaConf.to_container(data, resolve=True))
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(args.out) if args.out else Path(tmp) / "data"
        start = time.perf_counter()
        meta = write_dataset(cfg, out, overwrite=bool(args.out), workers=args.workers)
        seconds = time.perf_counter() - start
        size_mb = sum(f.stat().st_size for f in out.iterdir()) / 2**20
    result = {
        "data": args.data,
        "n_people": args.n_people,
        "bios": meta["counts"]["bios"],
        "workers": args.workers,
        "seconds": round(seconds, 2),
        "bios_per_second": round(meta["counts"]["bios"] / seconds),
        "peak_rss_mb": peak_rss_mb(),
        "dataset_mb": round(size_mb, 1),
        "python": sys.version.split()[0],
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
