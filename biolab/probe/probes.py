"""Run a probe over a model and a dataset; write ``probes.csv`` (one row per probe) and heatmaps.

Kinds: ``p_fast`` (linear probes on cached states at the six special positions and at every token
position, every layer), ``q_fast`` (the same on the name alone), ``p_paper`` / ``q_paper`` (the
paper's trained probes with an embedding update, see paper_probes). The probe's train people are
P_train, its test people P_test (the paper does not say; ``split: person`` is our choice, the same
split as QA, so a probe is scored on people whose attributes it never saw as labels).
``split: entry`` trains on entry 0 and tests on entry 1 of the same people (multi-entry data only).
``train_entries: k`` (p_fast) trains on the first k entries of each P_train person (null: all it
has; single data has one) and still tests on entry ``entry`` of P_test: more rows per class where
the data has them, at the same test.

Controls: ``shuffled`` (training labels permuted across people), ``random_init`` (the same probe on
an untrained model of the same shape), and the majority class in every row.
"""

from __future__ import annotations

import csv
import io
import json
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from biolab.config import from_dict
from biolab.data.dataset import BIOD, read_meta
from biolab.data.people import ATTRIBUTES
from biolab.device import pick_device
from biolab.errors import ConfigError
from biolab.io import atomic_write_text, check_writable, write_json
from biolab.model import auto_class, is_masked_lm, load_model
from biolab.probe.linear import LinearProbeConfig, fit_linear_probes, majority_accuracy
from biolab.probe.states import cached_states, collect_states, model_fingerprint, states_key
from biolab.probe.tasks import (
    TASKS,
    ProbeData,
    entries_per_person,
    load_probe_data,
    query_inputs,
    special_positions,
    token_positions,
)
from biolab.status import read_status, write_status

# probe.kind -> its family: a P-probe reads a bio's positions, a Q-probe the name alone. The report's
# tables and the notebooks sort probes by this, never by a preset's name.
PROBE_KINDS = {"p_fast": "p", "p_paper": "p", "q_fast": "q", "q_paper": "q"}
CONTROLS = ("shuffled", "random_init")
COLUMNS = (
    "model", "data", "probe", "control", "layer", "position", "position_kind", "attribute", "task",
    "train_acc", "test_acc", "majority", "n_train", "n", "seen",
)  # fmt: skip


@dataclass
class ProbeConfig:
    name: str = "p_fast"
    kind: str = "p_fast"
    max_people: int | None = 1000
    entry: int = 0
    split: str = "person"  # person (P_train -> P_test) | entry (entry 0 -> entry 1, same people)
    train_entries: int | None = 1  # p_fast, split=person: entries per P_train person (None: all); q: 1
    max_positions: int = 128  # p_fast: token positions from the entry start (0: special only)
    batch_size: int = 64  # sequences per forward pass when reading states
    controls: list = field(default_factory=lambda: ["shuffled", "random_init"])
    linear: LinearProbeConfig = field(default_factory=LinearProbeConfig)
    end_token: str = "eos"  # q probes: eos | none (read the name's last token)
    # the paper's probes (p_paper, q_paper)
    rank: int = 2
    norm: str = "layer"  # layer (P-probe) | batch (Q-probe)
    steps: int = 300
    probe_batch: int = 50
    lr: float = 1e-3
    weight_decay: float = 0.3
    tasks: list | None = None  # subset, e.g. ["company.whole"]; None: all 11
    positions: list | None = None  # p_paper: subset of special positions 0..5
    seed: int = 0

    @property
    def family(self) -> str:
        """``p`` (positions of a bio) or ``q`` (the name alone)."""
        return PROBE_KINDS[self.kind]

    def validate(self) -> None:
        if self.kind not in PROBE_KINDS:
            raise ConfigError(f"probe.kind must be one of {', '.join(PROBE_KINDS)}, got {self.kind!r}")
        if self.split not in ("person", "entry"):
            raise ConfigError(f"probe.split must be person or entry, got {self.split!r}")
        if self.train_entries is not None and self.train_entries < 1:
            raise ConfigError(f"probe.train_entries must be >= 1 or null, got {self.train_entries}")
        if self.train_entries != 1 and (self.kind == "p_paper" or self.split == "entry"):
            raise ConfigError(
                "probe.train_entries applies to p_fast with split=person (and q probes ignore it)"
            )
        if self.end_token not in ("eos", "none"):
            raise ConfigError(f"probe.end_token must be eos or none, got {self.end_token!r}")
        bad = [c for c in self.controls if c not in CONTROLS]
        if bad:
            raise ConfigError(f"unknown probe.controls {bad}; choose from {', '.join(CONTROLS)}")
        names = [f"{a}.{k}" for a, k in TASKS]
        bad = [t for t in self.tasks or [] if t not in names]
        if bad:
            raise ConfigError(f"unknown probe.tasks {bad}; choose from {', '.join(names)}")
        bad = [p for p in self.positions or [] if p not in range(6)]
        if bad:
            raise ConfigError(f"probe.positions must be in 0..5, got {bad}")
        if self.max_positions < 0 or self.steps < 1 or self.probe_batch < 1 or self.rank < 1:
            raise ConfigError("probe.max_positions >= 0, steps, probe_batch and rank >= 1 are required")
        for key in ("batch_size", "max_people"):
            if getattr(self, key) is not None and getattr(self, key) < 1:
                raise ConfigError(f"probe.{key} must be >= 1, got {getattr(self, key)}")
        if self.entry < 0 or self.lr <= 0 or self.weight_decay < 0:
            raise ConfigError("probe.entry >= 0, probe.lr > 0 and probe.weight_decay >= 0 are required")
        if self.norm not in ("layer", "batch"):
            raise ConfigError(f"probe.norm must be layer or batch, got {self.norm!r}")

    @classmethod
    def from_dict(cls, d: dict) -> ProbeConfig:
        d = dict(d)
        d["linear"] = LinearProbeConfig.from_dict(d.get("linear") or {})
        cfg = from_dict(cls, d, "probe")
        cfg.validate()
        return cfg

    def task_ids(self) -> list[int]:
        names = [f"{a}.{k}" for a, k in TASKS]
        return list(range(len(TASKS))) if not self.tasks else [names.index(t) for t in self.tasks]


def random_init_like(model, seed: int):
    """An untrained model of the same shape (the control for "the probe learned it, not the LM")."""
    torch.manual_seed(seed)
    return auto_class(model).from_config(model.config).to(next(model.parameters()).device).eval()


def _rows(meta: dict, kind: str, control: str, layers, positions, pos_kind, train_acc, test_acc, majority,
          n_train, n_test, seen, task_ids):  # fmt: skip
    out = []
    for g, (layer, position) in enumerate(zip(layers, positions, strict=True)):
        for j, t in enumerate(task_ids):
            attribute, task = TASKS[t]
            out.append({
                **meta, "probe": kind, "control": control, "layer": int(layer), "position": position,
                "position_kind": pos_kind[g], "attribute": attribute, "task": task,
                "train_acc": round(float(train_acc[g, j]), 4), "test_acc": round(float(test_acc[g, j]), 4),
                "majority": round(float(majority[j]), 4), "n_train": int(n_train[g]), "n": int(n_test[g]),
                "seen": round(float(seen[g, ATTRIBUTES.index(attribute)]), 4) if seen is not None else 0.0,
            })  # fmt: skip
    return out


def _fast_inputs(data: ProbeData, cfg: ProbeConfig, tokenizer):
    """Sequences, state positions [n, P] (input indices), position names/kinds, seen [n, P, 6]."""
    if cfg.kind == "p_fast":
        special, seen = special_positions(data.spans)
        tok = token_positions(data.bio_ids, cfg.max_positions)
        pos = np.concatenate([special, tok], 1)
        names = [f"s{k}" for k in range(special.shape[1])] + [str(t) for t in range(tok.shape[1])]
        kinds = ["special"] * special.shape[1] + ["token"] * tok.shape[1]
        starts = data.spans[:, :, 0]
        tok_seen = (starts[:, None, :] <= tok[:, :, None]) & (tok[:, :, None] >= 0)
        seen = np.concatenate([seen, tok_seen], 1)
        return data.bio_ids, np.where(pos >= 0, pos + 1, -1), names, kinds, seen
    end = None if cfg.end_token == "none" else tokenizer.eos_token_id
    seqs = query_inputs(tokenizer, data.names, end)
    last = np.array([len(s) - 1 for s in seqs])
    if end is None:
        return seqs, last[:, None], ["name_last"], ["query"], None
    return seqs, np.stack([last - 1, last], 1), ["name_last", "end"], ["query", "query"], None


def fast_probe_rows(model, tokenizer, data: ProbeData, cfg: ProbeConfig, meta: dict, cache_dir, device,
                    test_data: ProbeData | None = None, control: str = "none") -> list[dict]:  # fmt: skip
    """Linear probes at every layer x position x task on cached states."""
    task_ids = cfg.task_ids()

    def states_for(d: ProbeData):
        seqs, pos, names, kinds, seen = _fast_inputs(d, cfg, tokenizer)
        key = states_key(model=model_fingerprint(model), seqs=np.concatenate(seqs), pos=pos, kind=cfg.kind)
        states = cached_states(
            cache_dir, key, lambda: collect_states(model, seqs, pos, tokenizer.pad_token_id, cfg.batch_size)
        )
        return states, pos >= 0, names, kinds, seen

    states, present, names, kinds, seen = states_for(data)
    n, n_layers, n_pos, dim = states.shape
    flat = states.reshape(n, n_layers * n_pos, dim)
    mask = np.repeat(present[:, None, :], n_layers, 1).reshape(n, -1)
    y = data.labels[:, task_ids]
    if test_data is None:
        tested = data.entry is None or data.entry == cfg.entry  # other entries only train
        tr, te = np.flatnonzero(data.train), np.flatnonzero(~data.train & tested)
        x_tr, x_te, m_tr, m_te, y_tr, y_te = flat[tr], flat[te], mask[tr], mask[te], y[tr], y[te]
        seen_te = seen[te] if seen is not None else None
    else:  # split=entry: the same people, another entry
        t_states, t_present, _, _, t_seen = states_for(test_data)
        x_tr, m_tr, y_tr = flat, mask, y
        x_te = t_states.reshape(len(t_states), n_layers * n_pos, dim)
        m_te = np.repeat(t_present[:, None, :], n_layers, 1).reshape(len(t_states), -1)
        y_te, seen_te = test_data.labels[:, task_ids], t_seen
    if control == "shuffled":
        y_tr = y_tr[np.random.default_rng(cfg.seed).permutation(len(y_tr))]
    n_classes = [int(data.n_classes[t]) for t in task_ids]
    layers = np.repeat(np.arange(n_layers), n_pos)
    positions = names * n_layers
    pos_kind = kinds * n_layers
    # solver=auto: logistic regression where numbers are reported (special and query positions),
    # the closed-form ridge classifier for the token sweep (heatmaps: 20x more probes, 30x cheaper each).
    sweep = np.array([k == "token" for k in pos_kind])
    parts = [(np.ones_like(sweep), cfg.linear.solver)]
    if cfg.linear.solver == "auto":
        parts = [(~sweep, "logreg"), (sweep, "ridge")]
    train_acc = np.zeros((len(pos_kind), len(task_ids)))
    test_acc = np.zeros_like(train_acc)
    for sel, solver in parts:
        if sel.any():
            train_acc[sel], test_acc[sel] = fit_linear_probes(
                x_tr[:, sel], y_tr, x_te[:, sel], y_te, n_classes, replace(cfg.linear, solver=solver),
                m_tr[:, sel], m_te[:, sel], device, desc=f"{cfg.kind} {control} {solver}",
            )  # fmt: skip
    seen_g = None
    if seen_te is not None:  # fraction of test entries where the attribute is already in the text
        frac = seen_te.mean(0)  # [P, 6]
        seen_g = np.tile(frac, (n_layers, 1))
    return _rows(meta, cfg.kind, control, layers, positions, pos_kind, train_acc, test_acc,
                 majority_accuracy(y_tr, y_te),
                 m_tr.sum(0), m_te.sum(0), seen_g, task_ids)  # fmt: skip


def write_csv(path: str | Path, rows: list[dict]) -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    atomic_write_text(path, buf.getvalue())


def read_csv(path: str | Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def run_probe(model_dir, data_dir, cfg: ProbeConfig, out, overwrite: bool = False, device: str | None = None,
              plots: bool = True) -> list[dict]:  # fmt: skip
    """Probe ``model_dir`` on ``data_dir``'s people; write ``out/probes.csv`` (and heatmaps).

    ``out/states/`` caches hidden states, so a rerun (or a killed run) does not recompute them; a
    finished ``out`` is only replaced with ``overwrite``."""
    cfg.validate()
    out = check_probe_out(out, overwrite)
    device = pick_device(device)
    if read_meta(data_dir)["config"].get("style") == BIOD:
        raise ConfigError(f"data_dir={data_dir} is bioD: its attributes are not the six a probe task reads")
    started = time.time()
    model, tokenizer = load_model(model_dir, device=device)
    if is_masked_lm(model) and cfg.family == "p":
        raise ConfigError(f"{model_dir} is a masked LM: a bio position sees the values; use a q probe")
    data = load_probe_data(data_dir, tokenizer, cfg.max_people, probe_entries(cfg, data_dir))
    if data.entry is not None:  # P_test is scored on `entry` alone: its other entries are not read
        data = data.take(np.flatnonzero(data.train | (data.entry == cfg.entry)))
    test_data = load_probe_data(data_dir, tokenizer, cfg.max_people, 1) if cfg.split == "entry" else None
    meta = {"model": str(model_dir), "data": read_meta(data_dir)["config"]["name"]}
    out.mkdir(parents=True, exist_ok=True)
    write_status(out, "running", started)
    try:
        rows = _probe_all(model, tokenizer, data, test_data, cfg, meta, out / "states", device)
    except BaseException as err:
        write_status(out, "failed", started, error=repr(err))
        raise
    write_csv(out / "probes.csv", rows)
    write_json(
        out / "config.json", {"model": str(model_dir), "data_dir": str(data_dir), "probe": _asdict(cfg)}
    )
    if plots:
        from biolab.probe.plots import plot_probe_run

        plot_probe_run(rows, out)
    write_status(out, "done", started, rows=len(rows))
    return rows


def check_probe_out(out: str | Path, overwrite: bool) -> Path:
    """``out`` as a probe run may use it: new, empty, or a probe run (unfinished, or finished with
    ``overwrite``); never a training run or a folder of the user's, whose files a probe would replace."""
    out = check_writable(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"out={out} exists and is not a directory")
    status = read_status(out)
    if status and status.get("status") == "done" and not overwrite:
        raise ConfigError(f"out={out} holds a finished probe run; pass overwrite=true to replace it")
    config = out / "config.json"
    if config.is_file() and "probe" not in json.loads(config.read_text(encoding="utf-8")):
        raise ConfigError(f"out={out} holds another kind of run (config.json has no probe); use a new out")
    # A probe run (or the pipeline's probe stage) writes status.json first; a folder without it
    # holding anything is somebody else's.
    other = [] if status else sorted(p.name for p in out.glob("*") if not p.name.startswith("."))
    if other:
        raise ConfigError(f"out={out} is not empty and holds no probe run ({other[0]!r}); use a new out")
    return out


def probe_entries(cfg: ProbeConfig, data_dir) -> int | list[int]:
    """The bio entries a probe reads: ``entry``, and for p_fast the other training entries."""
    if cfg.kind != "p_fast" or cfg.train_entries == 1:
        return cfg.entry
    n = entries_per_person(data_dir)
    wanted = range(n if cfg.train_entries is None else min(cfg.train_entries, n))
    return sorted({cfg.entry, *wanted})


def _asdict(cfg: ProbeConfig) -> dict:
    from dataclasses import asdict

    return asdict(cfg)


def _probe_all(model, tokenizer, data, test_data, cfg, meta, cache_dir, device) -> list[dict]:
    if cfg.kind in ("p_fast", "q_fast"):
        run = fast_probe_rows
    else:
        from biolab.probe.paper_probes import paper_probe_rows as run
    rows = run(model, tokenizer, data, cfg, meta, cache_dir, device, test_data)
    if "shuffled" in cfg.controls:
        rows += run(model, tokenizer, data, cfg, meta, cache_dir, device, test_data, control="shuffled")
    if "random_init" in cfg.controls:
        rand = random_init_like(model, cfg.seed)
        rows += run(rand, tokenizer, data, cfg, meta, cache_dir, device, test_data, control="random_init")
    return rows
