"""Independently check a dataset folder: python scripts/check_dataset.py DIR [DIR ...]

Re-reads the files and checks spans, names, splits (half each; with an odd count P_test has one
more), QA answers, hashes and grammar; exits 1 on any problem.
"""

import json
import sys

from biolab.data.check import check_dataset
from biolab.errors import BiolabError


def main(dirs: list[str]) -> int:
    if not dirs or dirs[0] in ("-h", "--help"):
        print(__doc__.strip())
        return 0 if dirs else 2
    bad = 0
    for d in dirs:
        try:
            problems, stats = check_dataset(d)
        except BiolabError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        print(f"{d}: {'OK' if not problems else f'{len(problems)}+ problems'} {json.dumps(stats)}")
        for p in problems:
            print(f"  {p}")
        bad += bool(problems)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
