"""Linear probes on cached states, many at once: every (layer, position) group and every task is
fitted in one batched problem on the states' device.

``logreg``: multinomial logistic regression per task (softmax over that task's classes), features
standardised with the training rows' statistics, L2 penalty, minibatch Adam. ``ridge``: the
closed-form least-squares classifier on one-hot targets (exact, a few seconds for thousands of
probes on a CPU); tests compare both with scikit-learn.

``l2`` may be a list: each (group, task) then takes the value with the best accuracy on a held-out
``val_fraction`` of the training rows (ties go to the stronger penalty) and is refitted on all of
them. With few people per class an unpenalised probe memorises its training rows and scores below
the majority class on new people; the validated penalty falls back towards the class prior instead.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from biolab.config import from_dict
from biolab.errors import ConfigError


@dataclass
class LinearProbeConfig:
    solver: str = "logreg"  # logreg | ridge | auto (probes.py: logreg at special positions, ridge elsewhere)
    epochs: int = 20
    min_steps: int = 60  # logreg: at least this many Adam updates however few the rows
    batch_size: int = 256
    lr: float = 0.01
    l2: float | list[float] = 1e-3  # logreg: penalty on squared weights; ridge: lambda relative to trace/D
    val_fraction: float = 0.2  # training rows held out to choose l2 when it is a list
    group_chunk: int = 64  # (layer, position) groups fitted together; bounds memory
    seed: int = 0

    def __post_init__(self):
        # Checked on construction (tests and code build it directly), as ConfigError so that a script
        # prints one line; ``from_dict`` adds the key and type checks of a config section.
        if self.solver not in ("logreg", "ridge", "auto"):
            raise ConfigError(f"probe.linear.solver must be logreg, ridge or auto, got {self.solver!r}")
        grid = list(self.l2) if isinstance(self.l2, list | tuple) else [self.l2]
        if not grid or any(isinstance(v, bool) or not isinstance(v, int | float) or v < 0 for v in grid):
            raise ConfigError(
                f"probe.linear.l2 must be a number >= 0 or a non-empty list of them, got {self.l2!r}"
            )
        if not (0 < self.val_fraction < 1 if len(grid) > 1 else 0 <= self.val_fraction < 1):
            raise ConfigError(
                f"probe.linear.val_fraction must be in (0, 1) to choose l2, got {self.val_fraction}"
            )
        for key in ("epochs", "batch_size", "group_chunk"):
            if getattr(self, key) < 1:
                raise ConfigError(f"probe.linear.{key} must be >= 1, got {getattr(self, key)}")
        if self.min_steps < 0:
            raise ConfigError(f"probe.linear.min_steps must be >= 0, got {self.min_steps}")
        if self.lr <= 0:
            raise ConfigError(f"probe.linear.lr must be > 0, got {self.lr}")

    @classmethod
    def from_dict(cls, d: dict) -> LinearProbeConfig:
        return from_dict(cls, d, "probe.linear")

    @property
    def l2s(self) -> list[float]:
        """The l2 values to try, strongest first (the tie-break)."""
        values = list(self.l2) if isinstance(self.l2, list | tuple) else [self.l2]
        return sorted(dict.fromkeys(float(v) for v in values), reverse=True)


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


def _ridge_path(x, y, offsets, n_classes, m, grid):  # x [G, n, D+1] (last = bias), y [n, T], m [G, n]
    """Closed-form ridge classifiers for every l2 in ``grid``: one batched Cholesky solve per l2.
    Rows are centred so the bias is exact and unpenalised; lambda = l2 * mean diagonal of X'X."""
    mf = m.float()[..., None]
    n = mf.sum(1, keepdim=True).clamp(min=1)
    feats = x[..., :-1]
    x_mean = (feats * mf).sum(1, keepdim=True) / n
    xc = (feats - x_mean) * mf
    # X'Y for one-hot targets is a sum of feature rows per class: index_add, not a matmul over C
    xty = torch.zeros(x.shape[0], feats.shape[-1], n_classes, device=x.device)
    counts = torch.zeros(x.shape[0], 1, n_classes, device=x.device)
    for t in range(y.shape[1]):
        xty.index_add_(2, y[:, t] + offsets[t], xc.transpose(1, 2))
        counts.index_add_(2, y[:, t] + offsets[t], m.float()[:, None, :])
    y_mean = counts / n.transpose(1, 2)  # [G, 1, C]
    xtx = xc.transpose(1, 2) @ xc
    scale = xtx.diagonal(dim1=1, dim2=2).mean(-1).clamp(min=1e-6)[:, None]  # [G, 1]
    # A Cholesky factor per penalty, not one eigendecomposition shared by all: batched eigh is slow on
    # a GPU (and no faster on a CPU: 0.78-0.93x the time at D = 129 and 513, one thread, float32).
    eye = torch.eye(xtx.shape[-1], device=x.device)
    out = []
    for v in grid:
        w = _solve_spd(xtx + ((v + 1e-6) * scale)[..., None] * eye, xty)
        out.append(torch.cat([w, y_mean - x_mean @ w], 1))
    return out


def _solve_spd(a, b):  # a [G, D, D] symmetric positive definite up to rounding, b [G, D, C]
    chol, info = torch.linalg.cholesky_ex(a)
    w = torch.cholesky_solve(b, chol)
    bad = info != 0
    if bad.any():  # a tiny l2 on too few rows broke the float32 factor: those groups in float64
        wide = torch.float32 if a.device.type == "mps" else torch.float64  # MPS has no float64
        w[bad] = torch.linalg.lstsq(a[bad].to(wide), b[bad].to(wide)).solution.to(w.dtype)
    return w


def _log_prior(y, m, bounds):  # -> [G, C]: each task's log class frequencies over the present rows
    out = []
    for t, (lo, hi) in enumerate(bounds):
        counts = torch.zeros(m.shape[0], hi - lo, device=m.device)
        counts.scatter_add_(1, y[None, :, t].expand(m.shape[0], -1), m.float())
        out.append(torch.log((counts + 0.1) / (counts + 0.1).sum(1, keepdim=True)))
    return torch.cat(out, 1)


def _fit_logreg(x, y, m, bounds, cfg, generator, l2):  # l2: float or [G, 1, C] per class column
    g, n, d = x.shape
    c = int(bounds[-1][1])
    w = torch.zeros(g, d, c, device=x.device)
    # Start from the class prior (bias row) so a heavily penalised probe predicts the majority class
    # rather than noise: Adam moves the bias only ~lr per step.
    w[:, -1] = _log_prior(y, m, bounds)
    w.requires_grad_(True)
    opt = torch.optim.Adam([w], lr=cfg.lr)
    per_epoch = -(-n // cfg.batch_size)
    epochs = max(cfg.epochs, -(-cfg.min_steps // per_epoch))  # few rows: still min_steps updates
    for _ in range(epochs):
        order = torch.randperm(n, generator=generator).to(x.device)
        for s in range(0, n, cfg.batch_size):
            rows = order[s : s + cfg.batch_size]
            logits = x[:, rows] @ w  # [G, b, C]
            mb = m[:, rows].float()
            per_group = mb.sum(1).clamp(min=1)
            loss = (l2 * (w[:, :-1] ** 2)).sum()  # the bias row is not penalised
            for t, (lo, hi) in enumerate(bounds):
                ce = torch.nn.functional.cross_entropy(
                    logits[..., lo:hi].reshape(-1, hi - lo), y[rows, t].repeat(g), reduction="none"
                ).view(g, -1)
                loss = loss + ((ce * mb).sum(1) / per_group).sum()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return w.detach()


def _fit_chunk(x, y, offsets, m, bounds, cfg, generator):  # x [G, n, D+1], y [n, T], m [G, n] -> w
    """One chunk's probes, each with its validated penalty when ``cfg.l2`` is a list."""
    n = x.shape[1]

    def fit(m, l2):  # l2: [G, T], one penalty per (group, task)
        if cfg.solver == "logreg":
            cols = torch.cat([l2[:, t : t + 1].expand(-1, hi - lo) for t, (lo, hi) in enumerate(bounds)], 1)
            return _fit_logreg(x, y, m, bounds, cfg, generator, cols[:, None, :])
        values = l2.unique().tolist()
        w = torch.zeros(x.shape[0], x.shape[-1], bounds[-1][1], device=x.device)
        for v, wv in zip(values, _ridge_path(x, y, offsets, bounds[-1][1], m, values), strict=True):
            for t, (lo, hi) in enumerate(bounds):
                pick = l2[:, t] == v
                w[pick, :, lo:hi] = wv[pick, :, lo:hi]
        return w

    def uniform(v):
        return torch.full((x.shape[0], len(bounds)), v, device=x.device)

    grid = cfg.l2s
    if len(grid) == 1:
        l2 = uniform(grid[0])
    else:
        val = torch.zeros(n, dtype=torch.bool)
        val[torch.randperm(n, generator=generator)[: max(1, int(cfg.val_fraction * n))]] = True
        val = val.to(x.device)
        m_fit, m_val = m & ~val, m & val
        if cfg.solver == "ridge":
            ws = _ridge_path(x, y, offsets, bounds[-1][1], m_fit, grid)
        else:
            ws = [fit(m_fit, uniform(v)) for v in grid]
        with torch.no_grad():
            rows = val.nonzero()[:, 0]  # predict the held-out rows only
            scores = [_accuracy(x[:, rows] @ w, y[rows], m_val[:, rows].float(), bounds) for w in ws]
        best = torch.stack(scores).argmax(0)  # first maximum = the strongest penalty on ties
        l2 = torch.as_tensor(grid, device=x.device)[best]
    return fit(m, l2)


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

        w = _fit_chunk(x_tr, y_tr, offsets, m_tr, bounds, cfg, generator)
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
