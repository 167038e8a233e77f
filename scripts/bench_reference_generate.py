"""The yardstick of `python scripts/bench.py data`: the bios.jsonl of bioS_multi5_permute_fullname written
by the plainest direct code. It takes what biolab sampled (the people, each chunk's template and order
draws) and does the rest itself: each template resolved once per pronoun, each sentence appended piece by
piece, each line a json.dumps. No people.jsonl, qa.jsonl, meta.json or sha256. Its file must equal
biolab's byte for byte: --check DIR compares it with DIR/bios.jsonl.

    python scripts/bench_reference_generate.py [--n-people 100000] [--out FILE] [--check DIR]
"""

import argparse
import hashlib
import json
import time

from biolab.data.bios import bio_rng
from biolab.data.dataset import CHUNK
from biolab.data.people import ATTRIBUTES, sample_people
from biolab.data.pools import load_pools
from biolab.data.templates import PRONOUN_FORMS, load_templates

MULTI = 5  # bioS_multi5_permute_fullname: 5 template draws, each in 1 shuffled order, the name everywhere


def pieces(template, pronoun: str) -> tuple:
    """Literal strings, and the slots as 1-tuples naming a Person field; the subject is the full name,
    which takes the singular verb."""
    forms = PRONOUN_FORMS[pronoun]
    out = []
    for tok in template.tokens:
        if tok[0] == "lit" or tok[0] == "verb":
            out.append(tok[1])
        elif tok[1] == "subject":
            out.append(("full_name",))
        elif tok[1] in forms:
            out.append(forms[tok[1]])
        else:
            out.append((tok[1],))
    return tuple(out)


def render(person, sentences: list[tuple]) -> tuple[str, dict]:
    text, spans, names = "", {}, []
    for sentence in sentences:
        if text:
            text += " "
        absorb = False
        for piece in sentence:
            if isinstance(piece, str):
                text += piece[1:] if absorb and piece.startswith(".") else piece  # "Dow Inc." ends it
                absorb = False
                continue
            value = getattr(person, piece[0])
            span = [len(text), len(text) + len(value)]
            if piece[0] == "full_name":
                names.append(span)
            else:
                spans[piece[0]] = span
            text += value
            absorb = value.endswith(".")
    return text, {**{a: spans[a] for a in ATTRIBUTES}, "name": names}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--n-people", type=int, default=100_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="/tmp/bench_reference_bios.jsonl")
    ap.add_argument("--check", default=None, help="a dataset folder whose bios.jsonl must be the same")
    args = ap.parse_args()
    start, cpu = time.perf_counter(), time.process_time()
    people = sample_people(args.n_people, args.seed, load_pools())
    templates = load_templates("bioS")
    counts = [len(templates[a]) for a in ATTRIBUTES]
    # resolved[attribute][template][pronoun]
    resolved = [[{p: pieces(t, p) for p in PRONOUN_FORMS} for t in templates[a]] for a in ATTRIBUTES]
    n_bios = 0
    with open(args.out, "w", encoding="utf-8") as f:
        for chunk, s in enumerate(range(0, len(people), CHUNK)):
            group = people[s : s + CHUNK]
            rng = bio_rng(args.seed, chunk)
            tids = rng.integers(0, counts, size=(len(group), MULTI, 6)).tolist()
            orders = rng.random((len(group), MULTI, 1, 6)).argsort(-1).tolist()
            for i, person in enumerate(group):
                for d in range(MULTI):
                    order = orders[i][d][0]
                    sentences = [resolved[a][tids[i][d][a]][person.pronoun] for a in order]
                    text, spans = render(person, sentences)
                    line = {"person_id": person.id, "entry": d, "text": text, "spans": spans}
                    f.write(json.dumps(line, ensure_ascii=False) + "\n")
                    n_bios += 1
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    result = {"bios": n_bios, "seconds": round(seconds, 2), "cpu_seconds": round(cpu, 2), "out": args.out}
    if args.check:
        digest = []
        for path in (args.out, f"{args.check}/bios.jsonl"):
            with open(path, "rb") as f:
                digest.append(hashlib.file_digest(f, "sha256").hexdigest())
        result["same_bytes_as_biolab"] = digest[0] == digest[1]
    print(json.dumps(result))


if __name__ == "__main__":
    main()
