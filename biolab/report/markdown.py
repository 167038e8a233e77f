"""report.md: per experiment, its setting (people, model, steps, overrides) against the paper's, QA
and probe tables of ours beside the paper's numbers with their counts and intervals, memorization
beside QA, task accuracies, the paper's statements, the figures inline and each stage's provenance."""

from __future__ import annotations

import math

from biolab.console import duration
from biolab.data.people import ATTRIBUTES, SPLITS
from biolab.paper import paper_statements
from biolab.probe.plots import SHORT
from biolab.report.capacity import model_table, peak_table
from biolab.report.rows import (
    FORMAT_ERRORS,
    MISSING,
    Report,
    find,
    md_table,
    number,
    paper_gaps,
    qa_means,
    run_labels,
    spearman,
    unreadable,
)
from biolab.stages.rows import QA_ATTRIBUTES, flag

NONE = "n/a"  # the paper reports no such number
PROBE_TABLES = (
    (
        "pprobe_first_token_acc",
        "s0",
        "P-probe, first token, position s0 (before the first attribute), last layer",
    ),
    ("pprobe_whole_attribute_acc", "s0", "P-probe, whole attribute, position s0, last layer"),
    ("qprobe_first_token_acc", None, "Q-probe, first token, the name alone, last layer"),
    ("qprobe_whole_attribute_acc", None, "Q-probe, whole attribute, the name alone, last layer"),
)
# the probe controls, in the order their rows follow ours: what a probe reads without the LM's knowledge
PROBE_CONTROLS = (("shuffled", "shuffled labels"), ("random_init", "untrained model"))
INTRO = (
    "Root `{root}`. Percents. Ours are read from the finished stage folders; the paper's "
    "(GPT2-124M on 100k people, arXiv v3 figures) from `biolab/data/paper_numbers.csv`. "
    "`x [a, b]`: ours and its 95% Wilson interval over the table's n (people, questions, items or "
    "bios): the sampling of people only, not of seeds or training runs. "
    f"diff = ours - paper; `{MISSING}`: our number could not be read (see below); `{NONE}`: the paper "
    "reports none. Each experiment opens with its setting (people, model, pretraining steps, the command "
    "line's overrides), says when it is not the paper's, and closes with each stage's commit, device and "
    "wall time. Probe tables: last layer, P_test people; `majority` is the most common class, "
    "`shuffled labels` and `untrained model` the controls; "
    "p_fast/q_fast are linear probes on frozen states, the paper's (p_paper/q_paper) also train a "
    "low-rank embedding update. Part 3.2 (tasks, memorization) is read against the paper's statements "
    "(`biolab/data/paper_statements.tsv`)."
)
CAPACITY_NOTE = (
    "Bits by Part 3.3 Definition 4.3 from each model's loss on one bio per person (biolab.eval.capacity); "
    "P counts the embedding rows the data uses; R_max is the dataset's knowledge over P. int8/int4: "
    "round-to-nearest per group of 32 inputs (biolab.eval.quantize; the paper used GPTQ). "
    "capacity.csv holds every number needed to recompute R."
)
QA_ATTRIBUTE_NOTE = (
    "n: P_test people, each asked one question per attribute; the mean's interval is over all n x 6 "
    "questions taken as independent (one person's answers are not), so it is a little narrow. "
    "`majority`: always answering the attribute's most common P_train value."
)


def fmt(v, missing: str = MISSING) -> str:
    return missing if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.1f}"


def with_ci(r: dict | None, missing: str = MISSING) -> str:
    """A row's percent with its interval, ``80.3 [72.1, 86.5]``; the bare percent when no count was read."""
    r = r or {}
    if r.get("value") is None or r.get("ci_low") is None:
        return fmt(r.get("value"), missing)
    return f"{r['value']:.1f} [{r['ci_low']:.1f}, {r['ci_high']:.1f}]"


def counts(rows: list[dict | None]) -> str:
    """``train/test`` counts of rows (``?`` where one was not read)."""
    return "/".join(str(r["n"]) if r and r.get("n") else "?" for r in rows)


def signed(v) -> str:
    return "" if v is None else f"{v:+.1f}"


def qa_mean_table(report: Report, experiment: str) -> str:
    means = qa_means(report, experiment)
    mixed = any(m["qa_ratio"] for m in means)
    header = ["data", "model", "finetune", *(["QAr"] if mixed else []), "questions train/test", "P_train",
              "P_test", "paper", "diff", "paper source"]  # fmt: skip
    rows = [
        [m["label"], m["model"] or "", m["finetune"] or "none", *([m["qa_ratio"]] if mixed else []),
         counts([m["train_row"], m["test_row"]]), with_ci(m["train_row"], NONE), with_ci(m["test_row"]),
         fmt(m["paper"], NONE), signed(m["diff"]), m["paper_source"]]
        for m in means
    ]  # fmt: skip
    return md_table(header, rows)


def spearman_line(report: Report, experiment: str) -> str:
    pairs = [(m["test"], m["paper"]) for m in qa_means(report, experiment)]
    pairs = [p for p in pairs if p[0] is not None and p[1] is not None]
    if len(pairs) < 3:
        return (
            f"Spearman rank correlation with the paper: needs >= 3 datasets with both numbers ({len(pairs)})."
        )
    rho = spearman([p[0] for p in pairs], [p[1] for p in pairs])
    shown = "undefined (one side is constant)" if math.isnan(rho) else f"{rho:.2f}"
    return f"Spearman rank correlation of our P_test means with the paper's (n={len(pairs)}): **{shown}**."


def qa_attribute_table(report: Report, experiment: str) -> str:
    """Per run: ours with intervals, the majority baseline, the paper's and the diff, per attribute."""
    labels = run_labels(report.runs)
    header = ["data", "", "n", *[SHORT[a] for a in ATTRIBUTES], "mean"]
    rows = []
    for run in (r for r in report.runs if r.experiment == experiment and r.has_qa):
        mine = [r for r in report.rows if r["run"] == run.name and r["experiment"] == experiment]
        cells = [find(mine, split="test", metric="qa_exact_match", attribute=a) or {} for a in QA_ATTRIBUTES]
        majority = [find(mine, split="test", metric="qa_majority", attribute=a) for a in QA_ATTRIBUTES]
        ours = [c.get("value") for c in cells]
        paper = [c.get("paper_value") for c in cells]
        diff = [None if o is None or p is None else o - p for o, p in zip(ours, paper, strict=True)]
        n = cells[0].get("n") or ""  # per attribute; the mean's is n x 6 (QA_ATTRIBUTE_NOTE)
        rows.append([labels[run.path], "ours", n, *map(with_ci, cells)])
        rows.append(["", "majority", "", *(with_ci(m) if m else MISSING for m in majority)])
        rows.append(["", "paper", "", *(fmt(p, NONE) for p in paper)])
        rows.append(["", "diff", "", *map(signed, diff)])
    return md_table(header, rows)


def probe_people(rows: list[dict] | None) -> str:
    """``n_train/n`` people of a probe stage's probes.csv (a range where attributes differ)."""

    def span(key):
        values = sorted({int(float(r[key])) for r in rows or () if str(r.get(key, "")).strip()})
        return "?" if not values else str(values[0]) if len(values) == 1 else f"{values[0]}-{values[-1]}"

    return f"{span('n_train')}/{span('n')}"


def probe_table(report: Report, experiment: str, metric: str, position: str | None) -> str | None:
    """Per run and probe: ours, the paper's, our majority-class accuracy and the controls', per attribute."""
    labels = run_labels(report.runs)
    mine_all = [r for r in report.rows if r["experiment"] == experiment]
    # birth date has no whole-attribute task: its column would stay empty
    attrs = [a for a in ATTRIBUTES if find(mine_all, metric=metric, attribute=a)] or list(ATTRIBUTES)
    rows = []
    for run in (r for r in report.runs if r.experiment == experiment):
        mine = [r for r in mine_all if r["run"] == run.name]
        for probe in run.probes():
            if find(mine, probe=probe, metric="probe"):
                # a P-probe's missing stage is listed in the P tables, a Q-probe's in the Q tables
                if (report.probe_families.get((run.path, probe)) or "p") == metric[0]:
                    rows.append([labels[run.path], probe, "ours", "?/?", *[MISSING] * len(attrs)])
                continue
            where = {"probe": probe, **({"position": position} if position else {})}
            cells = [find(mine, metric=metric, attribute=a, **where) for a in attrs]
            if not any(cells):
                continue
            people = probe_people(report.probe_data.get((run.path, probe)))
            rows.append([labels[run.path], probe, "ours", people, *(with_ci(c) if c else "" for c in cells)])
            rows.append(["", "", "paper", "", *(fmt(c["paper_value"], NONE) if c else "" for c in cells)])
            for suffix, label in (("majority", "majority"), *PROBE_CONTROLS):
                name = metric.replace("_acc", "_majority") if suffix == "majority" else f"{metric}_{suffix}"
                control = [find(mine, metric=name, attribute=a, **where) for a in attrs]
                if any(control):
                    rows.append(["", "", label, "", *(with_ci(c) if c else "" for c in control)])
    if not rows:
        return None
    return md_table(["data", "probe", "", "people train/test", *[SHORT[a] for a in attrs]], rows)


PROBE_READING = (
    "**Reading the P-probe (the paper's Figure 5).** A cell is how often a linear probe on the last "
    "layer's state at a special position names an attribute of a P_test person it never saw as a label; "
    "s0 is the token before the bio's first attribute, right after the name. A model that stores a "
    "person's attributes on the name decodes all of them there (the paper: ~100% for multi5+permute+"
    "fullname); one that stores each attribute only where the text needs it decodes nothing beyond the "
    "class prior until the token right before that attribute (the diagonal; the paper's single: 1.5-38% "
    "at s0 but 100% for birth date, the attribute that follows s0)."
)


def _mean(values) -> float | None:
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


def _fixed_order(probe_rows: list[dict] | None) -> bool:
    """Whether every entry mentions the attributes in ATTRIBUTES order (then s_k precedes the k-th)."""
    seen = {(r["position"], r["attribute"]): float(r["seen"]) for r in probe_rows or ()
            if r.get("control") == "none" and r.get("position_kind") == "special"}  # fmt: skip
    if not seen:
        return False
    return all(
        seen.get((f"s{k}", a), -1) == (j < k)
        for k in range(len(ATTRIBUTES))
        for j, a in enumerate(ATTRIBUTES)
    )


def _s0_mean(rows: list[dict], metric: str, probe: str, key: str = "value") -> float | None:
    """The mean over the five attributes after birth date at s0 (None where none was measured)."""
    hits = [find(rows, metric=metric, probe=probe, position="s0", attribute=a) for a in ATTRIBUTES[1:]]
    return _mean(h[key] for h in hits if h)


def probe_reading(report: Report, experiment: str) -> str | None:
    """One paragraph from our numbers: what the first-token P-probe decodes at s0 (and, on data in a
    fixed order, on the diagonal), beside the majority class, the controls and the paper's."""
    metric = "pprobe_first_token_acc"
    lines = []
    labels = run_labels(report.runs)
    for run in (r for r in report.runs if r.experiment == experiment):
        mine = [r for r in report.rows if r["run"] == run.name and r["experiment"] == experiment]
        for probe in (p for p in run.probes() if report.probe_families.get((run.path, p)) == "p"):
            birth = find(mine, metric=metric, probe=probe, position="s0", attribute="birth_date")
            ours = _s0_mean(mine, metric, probe)
            if birth is None or ours is None:
                continue
            majority = _s0_mean(mine, "pprobe_first_token_majority", probe)
            controls = [_s0_mean(mine, f"{metric}_{c}", probe) for c, _ in PROBE_CONTROLS]
            controls = [c for c in controls if c is not None]
            paper = _s0_mean(mine, metric, probe, "paper_value")
            text = (f"`{labels[run.path]}` ({probe}): the five attributes after birth date at s0 "
                    f"{fmt(ours)}% on average (majority {fmt(majority)}%"
                    + (f", controls at most {fmt(max(controls))}%" if controls else "")
                    + (f"; paper {fmt(paper)}%" if paper is not None else "")
                    + f"), birth date {fmt(birth['value'])}%")  # fmt: skip
            if _fixed_order(report.probe_data.get((run.path, probe))):
                diag = [find(mine, metric=metric, probe=probe, position=f"s{k}", attribute=a)
                        for k, a in enumerate(ATTRIBUTES)]  # fmt: skip
                if all(diag):
                    diagonal = fmt(_mean(d["value"] for d in diag))
                    text += f"; at the token right before each attribute (the diagonal) {diagonal}%"
            lines.append(f"- {text}.")
    if not lines:
        return None
    return "\n\n".join([PROBE_READING, "\n".join(lines)])


def _cell(rows: list[dict], **where) -> str:
    hit = find(rows, **where)
    if hit is None:
        return ""  # not measured for this run (e.g. no hint for an inverse-search task)
    return MISSING if hit["note"] else with_ci(hit)


def memorization_table(report: Report, experiment: str) -> str | None:
    """Per dataset: BIO completion and verbatim regurgitation of the pretrained model beside QA
    exact match: "recites, does not answer" reads along a row."""
    labels = run_labels(report.runs)
    rows = []
    for run in report.runs:
        if run.experiment != experiment or not run.stage("memorization"):
            continue
        mine = [r for r in report.rows if r["experiment"] == experiment and r["run"] == run.name]
        flagged = find(mine, metric="bio_completion", split="test", attribute="mean")
        if flagged and flagged["note"]:
            mem, bios = [MISSING] * 5, "?/?"
        else:
            mem = [
                _cell(mine, metric="bio_completion", split="train", attribute="mean"),
                _cell(mine, metric="bio_completion", split="test", attribute="mean"),
                _cell(mine, metric="verbatim_exact", split="train"),
                _cell(mine, metric="verbatim_exact", split="test"),
                _cell(mine, metric="verbatim_prefix_tokens", split="train"),
            ]
            bios = counts([find(mine, metric="verbatim_exact", split=s) for s in SPLITS])
        qa = [_cell(mine, metric="qa_exact_match", split=s, attribute="mean") or NONE for s in SPLITS]
        rows.append([labels[run.path], bios, *mem, *qa])
    if not rows:
        return None
    header = ["data", "bios train/test", "BIO completion P_train", "BIO completion P_test",
              "verbatim P_train", "verbatim P_test", "exact prefix P_train (tokens)", "QA P_train",
              "QA P_test"]  # fmt: skip
    return md_table(header, rows)


def task_table(report: Report, experiment: str) -> str | None:
    """Per dataset and task run: exact match on P_train and P_test (no hint at test, then the hint
    written at test time), the hint itself, the majority answer, shared inverse queries, the paper."""
    labels = run_labels(report.runs)
    rows = []
    for run in report.runs:
        if run.experiment != experiment:
            continue
        mine = [r for r in report.rows if r["experiment"] == experiment and r["run"] == run.name]
        for label, info in run.task_runs().items():
            cells = [r for r in mine if r["task"] == label]
            test = find(cells, metric="task_answer", split="test") or {}
            hint = find(cells, metric="task_answer_with_hint", split="test") or {}
            items = [find(cells, metric="task_items", split=s) for s in ("train", "test")]
            counted = "/".join(str(i["value"]) if i else "?" for i in items)
            values = (
                [MISSING] * 6
                if test.get("note")
                else [
                    _cell(cells, metric="task_answer", split="train"),
                    _cell(cells, metric="task_answer", split="test"),
                    _cell(cells, metric="task_answer_with_hint", split="test"),
                    _cell(cells, metric="task_hint", split="test"),
                    _cell(cells, metric="task_majority", split="test"),
                    _cell(cells, metric="task_shared_queries", split="test"),
                ]
            )
            paper = [fmt(c.get("paper_value"), NONE) if c else "" for c in (test, hint)]
            how = test.get("finetune") or ""
            rows.append([labels[run.path], label, how, counted, info.get("hint_prob", ""), *values, *paper])
    if not rows:
        return None
    header = ["data", "task run", "trained", "items train/test", "hint_prob", "P_train", "P_test",
              "P_test, hint at test", "hint written", "majority", "shared queries", "paper P_test",
              "paper, hint at test"]  # fmt: skip
    return md_table(header, rows)


def statements_list(report: Report, experiment: str) -> str | None:
    """One line per statement: source, key, the metric its number is compared with, the text."""
    known = paper_statements()
    rows = [r for r in report.rows if r["experiment"] == experiment and r["metric"] == "paper_statement"]
    lines = []
    for r in rows:
        s = known[r["attribute"]]
        where = f" ({s['task']} {s['metric']}, P_test: {fmt(s['value'])})" if s["value"] is not None else ""
        lines.append(f"- **{s['source']}** `{s['key']}`{where}: {s['statement']}")
    return "\n".join(lines) or None


def knowledge_sections(report: Report, experiment: str) -> list[str]:
    """The memorization, task and statement headings and tables of one experiment (none when it has
    no such rows)."""
    parts = []
    for title, part in (
        ("Memorization vs QA (percent; BIO completion and verbatim on the pretrained model)",
         memorization_table(report, experiment)),
        ("Part 3.2 tasks: exact match (percent)", task_table(report, experiment)),
        ("The paper's statements (reference)", statements_list(report, experiment)),
    ):  # fmt: skip
        if part:
            parts += [f"### {title}", part]
    return parts


def setting_text(s: dict) -> str:
    """One run's size in words: ``scale tiny: 200 people, model `tiny`, 1,000 pretraining steps``."""
    params = f" ({s['params']:,} parameters without embeddings)" if s.get("params") else ""
    overrides = s.get("overrides")
    given = ""
    if overrides is not None:  # a manifest filed before overrides were recorded says nothing here
        given = f"; overrides beyond scale {s.get('scale') or '?'}: " + (
            ", ".join(f"`{o}`" for o in overrides) or "none"
        )
    model = f"model `{s.get('model') or '?'}`{params}"
    cel = s.get("celebrities")
    people = f"{number(s.get('people'))} people" + (f" ({cel:,} of them celebrities)" if cel else "")
    return f"scale {s.get('scale') or '?'}: {people}, {model}, " + (
        f"{number(s.get('steps'))} pretraining steps{given}"
    )


def setting_lines(report: Report, experiment: str) -> str:
    """The experiment's settings, one line per distinct one (naming its runs when there are several)."""
    labels = run_labels(report.runs)
    groups: dict[str, list[str]] = {}
    for run in (r for r in report.runs if r.experiment == experiment):
        groups.setdefault(setting_text(report.settings.get(run.path, {})), []).append(labels[run.path])
    lines = [
        f"- {text}" + (f" ({', '.join(names)})" if len(groups) > 1 else "") for text, names in groups.items()
    ]
    return "**Setting**:\n" + "\n".join(lines)


def compares_with_paper(report: Report, experiment: str) -> bool:
    return any(
        r["experiment"] == experiment and (r["paper_value"] is not None or r["metric"] == "paper_statement")
        for r in report.rows
    )


def like_for_like_warning(report: Report, experiment: str) -> str | None:
    """A warning when the experiment's numbers are set beside the paper's from another setting: other
    people, model or steps than the paper's, or the paper scale changed by overrides. Part 3.3 runs
    are set against Part 3.3's setting (bioS(N) with N >= 10,000, models of 0.8M to 0.5B parameters)."""
    caps = [r for r in report.capacity if r["experiment"] == experiment and r["quant"] == "fp32"]
    if caps:
        ns, ps = sorted({r["N"] for r in caps}), [r["P"] for r in caps]
        here = f"N = {', '.join(f'{n:,}' for n in ns)} and P = {min(ps):,} to {max(ps):,}"
        return ("> **Not like for like with the paper**: Part 3.3's laws come from bioS(N) with N >= 10,000 "
                f"and GPT2 models of 0.8M to 0.5B parameters; here {here}. Read ours by direction and "
                "ranking, not by level.")  # fmt: skip
    if not compares_with_paper(report, experiment):
        return None
    gaps: dict[str, None] = {}
    overridden = False
    for run in (r for r in report.runs if r.experiment == experiment):
        setting = report.settings.get(run.path, {})
        gaps.update(dict.fromkeys(paper_gaps(setting, run.data)))
        overridden = overridden or bool(setting.get("overrides"))
    if gaps:
        return (f"> **Not like for like with the paper**: {'; '.join(gaps)}. Read ours against the paper's "
                "by direction and ranking, not by level.")  # fmt: skip
    if overridden:
        return ("> **Check before comparing**: the paper's setting, changed by the overrides above; the "
                "paper's numbers hold only if they do not touch what its figure measured.")  # fmt: skip
    return None


def short_commit(sha) -> str:
    """The first 10 hex digits, keeping the ``+dirty`` mark of a checkout with local changes."""
    if not sha:
        return "?"
    sha = str(sha)
    return sha[:10] + ("+dirty" if sha.endswith("+dirty") else "")


def provenance_table(report: Report, experiment: str) -> str | None:
    """Each stage folder of the experiment once (with the datasets using it): commit, device, time."""
    labels = run_labels(report.runs)
    stages: dict[str, dict] = {}
    for run in (r for r in report.runs if r.experiment == experiment):
        for st in report.provenance.get(run.path, []):
            entry = stages.setdefault(st["folder"], {**st, "runs": []})
            entry["runs"].append(labels[run.path])
    if not stages:
        return None
    rows = []
    for folder, st in stages.items():
        time = duration(st["seconds"]) + ("" if st["status"] == "done" else f" ({st['status']})")
        used_by = ", ".join(dict.fromkeys(st["runs"]))
        rows.append([st["stage"], used_by, f"`{folder}`", short_commit(st["git_commit"]), st["device"] or "?",
                     time])  # fmt: skip
    total = sum(st["seconds"] for st in stages.values() if isinstance(st["seconds"], int | float))
    table = md_table(["stage", "data", "folder", "commit", "device", "wall time"], rows)
    return (
        f"{table}\n\nSum of these {len(stages)} stages' own wall times, each counted once: "
        f"{duration(total)} (stages of parallel jobs overlap, so a command can take less)."
    )


def figure_sections(report: Report, experiment: str, heatmaps: dict, curves: dict) -> list[str]:
    """Each pretraining's curves and each probe's heatmaps, inline."""
    labels = run_labels(report.runs)
    runs = [r for r in report.runs if r.experiment == experiment]
    parts = []
    drawn: dict[str, list[str]] = {}
    for run in runs:
        if curves.get(run.path):
            drawn.setdefault(curves[run.path], []).append(labels[run.path])
    if drawn:
        images = [f"![pretraining of {', '.join(names)}: loss and BIO first-token accuracy]({path})"
                  for path, names in drawn.items()]  # fmt: skip
        parts += ["### Training curves (pretraining loss; BIO first-token accuracy when evaluated)",
                  "\n\n".join(images)]  # fmt: skip
    blocks = [
        f"**{labels[run.path]} / {probe}**\n\n"
        + "\n".join(f"![{labels[run.path]} {probe} {p.rsplit('/', 1)[-1][:-4]}]({p})" for p in paths)
        for run in runs
        for probe in run.probes()
        if (paths := heatmaps.get((run.path, probe)))
    ]
    if blocks:
        parts += ["### Probe heatmaps", "\n\n".join(blocks)]
    return parts


def experiment_title(report: Report, experiment: str) -> str:
    scales = ", ".join(sorted({str(r.get("scale")) for r in report.runs if r.experiment == experiment}))
    return f"## Experiment `{experiment}` (scale {scales})"


def setting_sections(report: Report, experiment: str) -> list[str]:
    warning = like_for_like_warning(report, experiment)
    return [setting_lines(report, experiment), *([warning] if warning else [])]


def capacity_sections(report: Report, experiment: str, figure: str | None) -> list[str]:
    """Part 3.3: the models' bits and capacity ratios, the peak per series beside the paper's laws,
    the plot; none for an experiment without capacity stages."""
    mine = [r for r in report.capacity if r["experiment"] == experiment]
    if not mine:
        return []
    parts = ["### Knowledge capacity: peak R = bits / P per series (bits per parameter)", CAPACITY_NOTE,
             peak_table(mine), "### Knowledge capacity per model", model_table(mine)]  # fmt: skip
    if figure:
        parts.append(f"![bits learned against parameters, with the 2 and 1 bit/param laws]({figure})")
    return parts


def qa_sections(report: Report, experiment: str, figure: str | None) -> list[str]:
    """The QA mean and per-attribute tables and the bar chart; none for an experiment without QA."""
    if not any(r.has_qa for r in report.runs if r.experiment == experiment):
        return []
    parts = ["### QA exact match, mean over attributes", qa_mean_table(report, experiment),
             spearman_line(report, experiment)]  # fmt: skip
    if figure:
        parts.append(f"![P_test QA accuracy, ours vs the paper]({figure})")
    return parts + ["### QA exact match on P_test, per attribute", QA_ATTRIBUTE_NOTE,
                    qa_attribute_table(report, experiment)]  # fmt: skip


def probe_sections(report: Report, experiment: str) -> list[str]:
    reading = probe_reading(report, experiment)
    parts = ["### Where the attributes are stored", reading] if reading else []
    for metric, position, title in PROBE_TABLES:
        table = probe_table(report, experiment, metric, position)
        if table:
            parts += [f"### {title}", table]
    return parts


def provenance_sections(report: Report, experiment: str) -> list[str]:
    provenance = provenance_table(report, experiment)
    return ["### Provenance (each stage's status.json)", provenance] if provenance else []


def guarded(report: Report, experiment: str, what: str, build) -> list[str]:
    """``build()``'s parts, or one line saying why they could not be written (also a note at the top):
    one stage's odd numbers never cost the report its other sections and experiments."""
    try:
        return build()
    except FORMAT_ERRORS as err:
        why = unreadable(err)
        flag(f"{experiment}: the {what} could not be written: {why}", False, report.notes)
        return [f"### {what.capitalize()}: {why}"]


def experiment_sections(report: Report, exp: str, figures: dict, heatmaps: dict, curves: dict,
                        capacity: dict) -> list[str]:  # fmt: skip
    sections = (
        ("setting", lambda: setting_sections(report, exp)),
        ("QA tables", lambda: qa_sections(report, exp, figures.get(exp))),
        ("probe tables", lambda: probe_sections(report, exp)),
        ("capacity tables", lambda: capacity_sections(report, exp, capacity.get(exp))),
        ("memorization and task tables", lambda: knowledge_sections(report, exp)),
        ("figures", lambda: figure_sections(report, exp, heatmaps, curves)),
        ("provenance table", lambda: provenance_sections(report, exp)),
    )
    parts = [experiment_title(report, exp)]
    for what, build in sections:
        parts += guarded(report, exp, what, build)
    return parts


def render_markdown(report: Report, figures: dict, heatmaps: dict, curves: dict | None = None,
                    capacity: dict | None = None) -> str:  # fmt: skip
    """The whole report.md; ``figures``: experiment -> QA bar chart, ``heatmaps``: (run, probe) -> pngs,
    ``curves``: run path -> its pretraining's curves, ``capacity``: experiment -> its capacity plot."""
    body = []
    for exp in sorted({r.experiment for r in report.runs}):
        body += experiment_sections(report, exp, figures, heatmaps, curves or {}, capacity or {})
    parts = ["# biolab report", INTRO.format(root=report.root)]
    if report.notes:  # after the experiments: a section that could not be written adds its note
        parts.append(f"## Missing or unfinished ({len(report.notes)})")
        parts.append("\n".join(f"- {n}" for n in report.notes))
    return "\n\n".join(parts + body) + "\n"
