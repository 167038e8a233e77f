"""The paper's probes (P3.1 4.1-4.2): the LM frozen (dropout on while training), a trainable
rank-r update of the input embedding, a trainable norm and a linear head on the last layer's state.

P-probe: rank 2, LayerNorm, the state at a special position of a bio entry, batch 50.
Q-probe: rank 16, BatchNorm, the state at the end token after the name alone, batch 200.
Both: AdamW (eps 1e-6, wd 0.3, lr 1e-3), no warmup, linear decay to 0. One parameter set per
(task, position), as in the paper; the states are read through ``run_with_cache``.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from biolab.data.people import ATTRIBUTES
from biolab.data.tokens import pad_right
from biolab.probe.linear import majority_accuracy
from biolab.probe.states import run_with_cache
from biolab.probe.tasks import TASKS, ProbeData, query_inputs, special_positions


class EmbeddingProbe(nn.Module):
    """delta(ids) = A[ids] @ B added to the frozen embedding; norm + linear head on a state."""

    def __init__(self, vocab: int, d_model: int, rank: int, n_classes: int, norm: str):
        super().__init__()
        self.a = nn.Parameter(torch.randn(vocab, rank) / rank**0.5)
        self.b = nn.Parameter(torch.zeros(rank, d_model))  # starts as the unchanged model
        self.norm = nn.LayerNorm(d_model) if norm == "layer" else nn.BatchNorm1d(d_model)
        self.head = nn.Linear(d_model, n_classes)

    def forward(self, model, ids, mask, pos):  # ids [b, s], pos [b] -> logits [b, classes]
        embeds = model.get_input_embeddings()(ids) + self.a[ids] @ self.b
        last = run_with_cache(model, attention_mask=mask, inputs_embeds=embeds)[-1]  # [b, s, d]
        return self.head(self.norm(last[torch.arange(len(pos)), pos]))


def train_embedding_probe(model, seqs, pos, labels, train_rows, n_classes, cfg, device, generator):
    """Fit one probe; return (train_acc, test_acc) over train_rows / the other rows."""
    probe = EmbeddingProbe(model.config.vocab_size, model.config.hidden_size, cfg.rank, n_classes, cfg.norm)
    probe.to(device)
    opt = torch.optim.AdamW(probe.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, eps=1e-6)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1 - s / cfg.steps)
    pad = model.config.pad_token_id or 0

    def batch(rows):
        # Causal: nothing after the read position matters, so each sequence is cut there.
        ids, mask = pad_right([seqs[r][: pos[r] + 1] for r in rows], pad)
        return (torch.from_numpy(ids).to(device), torch.from_numpy(mask).to(device),
                torch.as_tensor(pos[rows], device=device))  # fmt: skip

    model.train()  # the paper keeps dropout on while the probe trains
    y = torch.as_tensor(labels, device=device)
    for _ in range(cfg.steps):
        rows = train_rows[torch.randint(len(train_rows), (cfg.probe_batch,), generator=generator).numpy()]
        loss = nn.functional.cross_entropy(probe(model, *batch(rows)), y[rows])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    model.eval()
    probe.eval()
    hits = np.zeros(len(seqs), bool)
    with torch.no_grad():
        for s in range(0, len(seqs), 256):
            rows = np.arange(s, min(s + 256, len(seqs)))
            hits[rows] = (probe(model, *batch(rows)).argmax(-1) == y[rows]).cpu().numpy()
    test = np.setdiff1d(np.arange(len(seqs)), train_rows)
    return hits[train_rows].mean(), hits[test].mean()


def paper_probe_rows(model, tokenizer, data: ProbeData, cfg, meta, cache_dir, device, test_data=None,
                     control: str = "none") -> list[dict]:  # fmt: skip
    """Rows for every selected (task, position): the P-probe at special positions or the Q-probe."""
    if test_data is not None:
        raise NotImplementedError("the paper's probes use split=person")
    for p in model.parameters():
        p.requires_grad_(False)
    train_rows = np.flatnonzero(data.train)
    labels = data.labels.copy()
    if control == "shuffled":
        labels[train_rows] = labels[train_rows][np.random.default_rng(cfg.seed).permutation(len(train_rows))]
    if cfg.kind == "p_paper":
        special, seen = special_positions(data.spans)
        seqs = data.bio_ids
        positions = [
            (f"s{k}", special[:, k] + 1, seen[:, k]) for k in (cfg.positions or range(special.shape[1]))
        ]
    else:
        end = None if cfg.end_token == "none" else tokenizer.eos_token_id
        seqs = query_inputs(tokenizer, data.names, end)
        last = np.array([len(s) - 1 for s in seqs])
        positions = [("end" if end is not None else "name_last", last, None)]
    generator = torch.Generator().manual_seed(cfg.seed)
    test = ~data.train
    rows = []
    jobs = [(name, pos, seen, t) for name, pos, seen in positions for t in cfg.task_ids()]
    for name, pos, seen, t in tqdm(jobs, desc=f"{cfg.kind} {control}"):
        attribute, task = TASKS[t]
        n_classes = int(data.n_classes[t])
        train_acc, test_acc = train_embedding_probe(
            model, seqs, pos, labels[:, t], train_rows, n_classes, cfg, device, generator
        )
        majority = majority_accuracy(labels[train_rows][:, [t]], labels[test][:, [t]])[0]
        seen_frac = seen[test][:, ATTRIBUTES.index(attribute)].mean() if seen is not None else 0.0
        rows.append({
            **meta, "probe": cfg.kind, "control": control, "layer": model.config.num_hidden_layers,
            "position": name, "position_kind": "special" if cfg.kind == "p_paper" else "query",
            "attribute": attribute, "task": task, "train_acc": round(float(train_acc), 4),
            "test_acc": round(float(test_acc), 4),
            "majority": round(float(majority), 4),
            "n_train": len(train_rows), "n": int(test.sum()),
            "seen": round(float(seen_frac), 4),
        })  # fmt: skip
    return rows
