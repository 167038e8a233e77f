"""Check that a device run's $OUT folder will come back whole: python scripts/device/check_out.py OUT

The device tool returns at most 8 plain files, each under 16 MiB, at most two folders deep, with
plain names. Prints "ok: ..." and exits 0, or prints one line with the first reason and exits 1.
"""

import re
import sys
from pathlib import Path

MAX_FILES = 8
MAX_BYTES = 16 * 2**20
MAX_DEPTH = 2  # folders between OUT and a file
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def problems(out: Path) -> str | None:
    """The first reason OUT would not come back whole, or None."""
    if not out.is_dir():
        return f"{out} is not a folder"
    files = []
    for path in sorted(out.rglob("*")):
        rel = path.relative_to(out)
        bad = next((p for p in rel.parts if not NAME.fullmatch(p)), None)
        if bad is not None:
            return f"odd name {ascii(bad)} in {ascii(str(rel))}"
        if path.is_symlink():
            return f"{rel} is a link"
        if path.is_dir():
            continue
        if not path.is_file():
            return f"{rel} is not a plain file"
        if len(rel.parts) - 1 > MAX_DEPTH:
            return f"{rel} is {len(rel.parts) - 1} folders deep (at most {MAX_DEPTH})"
        size = path.stat().st_size
        if size >= MAX_BYTES:
            return f"{rel} is {size / 2**20:.1f} MiB (under {MAX_BYTES // 2**20} MiB)"
        files.append(rel)
    if len(files) > MAX_FILES:
        return f"{len(files)} files (at most {MAX_FILES}): {', '.join(map(str, files))}"
    return None


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: check_out.py OUT", file=sys.stderr)
        return 2
    out = Path(argv[0])
    reason = problems(out)
    if reason:
        print(f"check_out: refused: {reason}")
        return 1
    n = sum(1 for p in out.rglob("*") if p.is_file())
    print(f"check_out: ok: {n} files in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
