import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from biolab.probe.linear import LinearProbeConfig, fit_linear_probes, majority_accuracy


def blobs(n=600, d=24, classes=(5, 12), scales=(0.0, 0.6, 1.5), seed=0):
    """Features [n, G, d] whose class signal grows with the group index; labels [n, T]."""
    rng = np.random.default_rng(seed)
    centers = [rng.normal(size=(c, d)) for c in classes]
    y = np.stack([rng.integers(0, c, n) for c in classes], 1)
    signal = sum(centers[t][y[:, t]] for t in range(len(classes)))
    x = np.stack([signal * s + rng.normal(size=(n, d)) * 1.5 for s in scales], 1)
    return x.astype(np.float32), y, list(classes)


@pytest.mark.parametrize("solver", ["logreg", "ridge"])
def test_batched_probes_agree_with_scikit_learn(solver):
    x, y, classes = blobs()
    tr = np.arange(len(y)) < 400
    _, test_acc = fit_linear_probes(x[tr], y[tr], x[~tr], y[~tr], classes, LinearProbeConfig(solver=solver))
    for g in range(x.shape[1]):
        for t in range(y.shape[1]):
            ref = LogisticRegression(max_iter=2000).fit(x[tr, g], y[tr, t]).score(x[~tr, g], y[~tr, t])
            assert abs(test_acc[g, t] - ref) < 0.07, (g, t, test_acc[g, t], ref)
    assert test_acc[2].min() > 0.8 and test_acc[0].max() < 0.35


def test_absent_rows_are_ignored():
    x, y, classes = blobs(scales=(1.5,))
    tr = np.arange(len(y)) < 400
    mask_tr = np.ones((400, 1), bool)
    mask_tr[::3] = False
    garbage = x.copy()
    garbage[np.flatnonzero(tr)[::3]] = 1e3  # absent rows carry nonsense
    cfg = LinearProbeConfig(solver="ridge")
    _, clean = fit_linear_probes(x[tr][mask_tr[:, 0]], y[tr][mask_tr[:, 0]], x[~tr], y[~tr], classes, cfg)
    _, masked = fit_linear_probes(garbage[tr], y[tr], x[~tr], y[~tr], classes, cfg, mask_train=mask_tr)
    np.testing.assert_allclose(masked, clean, atol=1e-3)


def test_shuffled_labels_fall_to_chance():
    x, y, classes = blobs(scales=(1.5,))
    tr = np.arange(len(y)) < 400
    shuffled = y[tr][np.random.default_rng(0).permutation(400)]
    _, acc = fit_linear_probes(x[tr], shuffled, x[~tr], y[~tr], classes, LinearProbeConfig())
    assert acc[0, 0] < 0.35 and acc[0, 1] < 0.2


def test_majority_accuracy():
    assert majority_accuracy(np.array([[1], [1], [0]]), np.array([[1], [0], [0], [0]]))[0] == 0.25


def test_unknown_solver():
    with pytest.raises(ValueError, match="logreg, ridge or auto"):
        LinearProbeConfig(solver="svm")


def skewed_noise(n=300, d=64, classes=30, seed=1):
    """Features with no signal; labels with one class at ~40%: only the prior can be learned."""
    rng = np.random.default_rng(seed)
    p = np.full(classes, 0.6 / (classes - 1))
    p[0] = 0.4
    y = rng.choice(classes, size=(n, 1), p=p)
    return rng.normal(size=(n, 1, d)).astype(np.float32), y, [classes]


@pytest.mark.parametrize("solver", ["logreg", "ridge"])
def test_a_validated_penalty_falls_back_to_the_majority_class_without_signal(solver):
    x, y, classes = skewed_noise()
    tr = np.arange(len(y)) < 150
    majority = majority_accuracy(y[tr], y[~tr])[0]
    _, weak = fit_linear_probes(x[tr], y[tr], x[~tr], y[~tr], classes, LinearProbeConfig(solver, l2=1e-4))
    grid = LinearProbeConfig(solver, l2=[1e-4, 1e-2, 1.0, 100.0])
    _, chosen = fit_linear_probes(x[tr], y[tr], x[~tr], y[~tr], classes, grid)
    assert weak[0, 0] < majority - 0.1  # memorises its 150 rows: worse than the prior on new ones
    assert chosen[0, 0] >= majority - 0.03


@pytest.mark.parametrize("solver", ["logreg", "ridge"])
def test_a_validated_penalty_keeps_a_real_signal(solver):
    x, y, classes = blobs()
    tr = np.arange(len(y)) < 400
    grid = LinearProbeConfig(solver, l2=[1e-3, 1e-2, 1.0, 100.0])
    _, test_acc = fit_linear_probes(x[tr], y[tr], x[~tr], y[~tr], classes, grid)
    assert test_acc[2].min() > 0.8 and test_acc[0].max() < 0.35


@pytest.mark.parametrize("l2", [[], -1.0, [0.1, "big"]])
def test_bad_penalties_are_refused(l2):
    with pytest.raises(ValueError, match="probe.linear.l2"):
        LinearProbeConfig(l2=l2)


def test_ridge_without_penalty_on_fewer_rows_than_features_interpolates():
    # X'X singular with two dominant directions: float32 rounding breaks the Cholesky factor even with
    # the 1e-6 ridge, and those groups are solved again in float64
    x, y, classes = blobs(n=40, d=256)
    x[:, :, :2] *= 100
    x = x @ np.random.default_rng(1).normal(size=(256, 256)).astype(np.float32)
    tr = np.arange(len(y)) < 20
    cfg = LinearProbeConfig(solver="ridge", l2=0.0, val_fraction=0.0)
    train_acc, test_acc = fit_linear_probes(x[tr], y[tr], x[~tr], y[~tr], classes, cfg)
    assert np.isfinite(test_acc).all() and (train_acc == 1.0).all()  # 20 points, 257 weights: all fitted
