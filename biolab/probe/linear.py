"""Linear probes on cached states, many at once: every (layer, position) group and every task is
fitted in one batched problem on the states' device.

``logreg``: multinomial logistic regression per task (softmax over that task's classes), features
standardised with the training rows' statistics, L2 penalty, minibatch Adam. ``ridge``: the
closed-form least-squares classifier on one-hot targets (exact, a few seconds for thousands of
probes on a CPU); tests compare both with scikit-learn.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm


@dataclass
class LinearProbeConfig:
    solver: str = "logreg"  # logreg | ridge | auto (probes.py: logreg at special positions, ridge elsewhere)
    epochs: int = 20
    batch_size: int = 256
    lr: float = 0.01
    l2: float = 1e-3  # logreg: penalty on mean squared weight; ridge: lambda relative to trace/D
    group_chunk: int = 64  # (layer, position) groups fitted together; bounds memory
    seed: int = 0

    def __post_init__(self):
        if self.solver not in ("logreg", "ridge", "auto"):
            raise ValueError(f"probe solver must be logreg, ridge or auto, got {self.solver!r}")


def _standardize(x_tr, m_tr, x_te):
    w = m_tr[..., None].float()
    n = w.sum(1, keepdim=True).clamp(min=1)
    mu = (x_tr * w).sum(1, keepdim=True) / n
    sd = (((x_tr - mu) ** 2 * w).sum(1, keepdim=True) / n).sqrt().clamp(min=1e-4)
    return (x_tr - mu) / sd * w, (x_te - mu) / sd


def _accuracy(logits, y, mask, bounds):  # -> [G, T]
    acc = []
    for t, (lo, hi) in enumerate(bounds):
        hit = (logits[..., lo:hi].argmax(-1) == y[None, :, t]).float() * mask
        acc.append(hit.sum(1) / mask.sum(1).clamp(min=1))
    return torch.stack(acc, 1)


def _fit_ridge(x, y1h, m, l2):
    d = x.shape[-1]
    xtx = x.transpose(1, 2) @ x
    lam = l2 * xtx.diagonal(dim1=1, dim2=2).mean(-1).clamp(min=1e-6)
    xtx = xtx + lam[:, None, None] * torch.eye(d, dtype=x.dtype, device=x.device)
    return torch.linalg.solve(xtx, x.transpose(1, 2) @ (y1h * m[..., None]))


def _fit_logreg(x, y, m, bounds, cfg, generator):
    g, n, d = x.shape
    c = int(bounds[-1][1])
    w = torch.zeros(g, d, c, device=x.device, requires_grad=True)
    opt = torch.optim.Adam([w], lr=cfg.lr)
    for _ in range(cfg.epochs):
        order = torch.randperm(n, generator=generator).to(x.device)
        for s in range(0, n, cfg.batch_size):
            rows = order[s : s + cfg.batch_size]
            logits = x[:, rows] @ w  # [G, b, C]
            mb = m[:, rows].float()
            per_group = mb.sum(1).clamp(min=1)
            loss = cfg.l2 * (w[:, :-1] ** 2).sum()  # the bias row is not penalised
            for t, (lo, hi) in enumerate(bounds):
                ce = torch.nn.functional.cross_entropy(
                    logits[..., lo:hi].reshape(-1, hi - lo), y[rows, t].repeat(g), reduction="none"
                ).view(g, -1)
                loss = loss + ((ce * mb).sum(1) / per_group).sum()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return w.detach()


def fit_linear_probes(
    x_train: np.ndarray,  # [n_train, G, D]
    y_train: np.ndarray,  # [n_train, T]
    x_test: np.ndarray,  # [n_test, G, D]
    y_test: np.ndarray,  # [n_test, T]
    n_classes: list[int],  # classes per task
    cfg: LinearProbeConfig,
    mask_train: np.ndarray | None = None,  # [n_train, G] rows present (positions past a bio's end)
    mask_test: np.ndarray | None = None,
    device: str | torch.device = "cpu",
    desc: str = "linear probes",
) -> tuple[np.ndarray, np.ndarray]:  # train_acc [G, T], test_acc [G, T]
    """Fit one probe per (group, task); return train and test accuracy."""
    if cfg.solver == "auto":
        raise ValueError("solver=auto is resolved per position kind by the caller (biolab.probe.probes)")
    n_tr, g_all, _ = x_train.shape
    bounds = list(zip(np.cumsum([0, *n_classes[:-1]]), np.cumsum(n_classes), strict=True))
    mask_train = np.ones((n_tr, g_all), bool) if mask_train is None else mask_train
    mask_test = np.ones(x_test.shape[:2], bool) if mask_test is None else mask_test
    y_tr = torch.as_tensor(np.asarray(y_train), dtype=torch.long, device=device)
    y_te = torch.as_tensor(np.asarray(y_test), dtype=torch.long, device=device)
    offsets = torch.as_tensor([lo for lo, _ in bounds], device=device)
    generator = torch.Generator().manual_seed(cfg.seed)
    train_acc, test_acc = [], []
    chunks = range(0, g_all, cfg.group_chunk)
    for s in tqdm(chunks, desc=desc, disable=len(chunks) < 4):
        sl = slice(s, s + cfg.group_chunk)

        def load(a, sl=sl):
            return torch.as_tensor(np.asarray(a[:, sl], dtype=np.float32), device=device).transpose(0, 1)

        m_tr = torch.as_tensor(mask_train[:, sl].T, device=device)
        m_te = torch.as_tensor(mask_test[:, sl].T, device=device)
        x_tr, x_te = _standardize(load(x_train), m_tr, load(x_test))
        ones = torch.ones(*x_tr.shape[:2], 1, device=device)
        x_tr = torch.cat([x_tr, ones * m_tr[..., None]], -1)  # bias feature, zero on absent rows
        x_te = torch.cat([x_te, torch.ones(*x_te.shape[:2], 1, device=device)], -1)
        if cfg.solver == "ridge":
            y1h = torch.zeros(n_tr, bounds[-1][1], device=device)
            y1h.scatter_(1, y_tr + offsets, 1.0)
            w = _fit_ridge(x_tr, y1h[None].expand(x_tr.shape[0], -1, -1), m_tr, cfg.l2)
        else:
            w = _fit_logreg(x_tr, y_tr, m_tr, bounds, cfg, generator)
        with torch.no_grad():
            train_acc.append(_accuracy(x_tr @ w, y_tr, m_tr.float(), bounds).cpu())
            test_acc.append(_accuracy(x_te @ w, y_te, m_te.float(), bounds).cpu())
    return torch.cat(train_acc).numpy(), torch.cat(test_acc).numpy()


def majority_accuracy(y_train: np.ndarray, y_test: np.ndarray) -> np.ndarray:  # [T]
    """Test accuracy of always answering the most common training class, per task."""
    out = []
    for t in range(y_train.shape[1]):
        top = np.bincount(y_train[:, t]).argmax()
        out.append(float((y_test[:, t] == top).mean()))
    return np.array(out)
