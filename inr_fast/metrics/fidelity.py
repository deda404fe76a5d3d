"""Physics fidelity of reconstructions: observable biases and resolutions, distributions, quark/gluon
taggers trained on the original jets, and the physics quality level Q2p (pure functions).

Conventions: images (B, H, W, 3) in GeV, channels last, as :mod:`inr_fast.metrics.physics`; observables
from :func:`inr_fast.metrics.substructure.substructure`, computed for the original x and the reconstruction
x_hat with the SAME zero-suppression levels (those of the originals). Labels are used as given: the
positive class of every AUC and ROC curve is ``positive`` (default :data:`inr_fast.layout.QUARK` = 1,
what our files write; the public file's convention is not certain, so pass it where it differs).

Observable errors (:func:`observable_errors`)
    Signed relative error (value(x_hat) - value(x)) / value(x) for every observable, except those in
    :data:`ABSOLUTE_OBSERVABLES` (the HCAL within-tower variation, exactly 0 in the data), whose error
    is the difference value(x_hat) - value(x). 0/0 (both zero, e.g. an empty Tracks cone) is nan and
    means agreement; x/0 is +-inf.

Fidelity table (:func:`fidelity_table`), per observable and class (quark, gluon, all):
    ``bias`` = median of the error; ``res68`` = half the width of its central 68 % interval,
    (q84 - q16) / 2; ``frac_out`` = fraction of jets with |error| > ``tolerance`` (2 %). Jets whose
    error is nan (0/0) are left out of bias and res68 (``n_undefined`` counts them) and count as inside;
    +-inf counts as outside and enters the quantiles as +-inf.

Taggers (:func:`tagger_fidelity`)
    Trained on ORIGINAL jets only, applied to originals and reconstructions of held-out jets:
    k-fold cross-fitting (folds stratified by label, drawn from ``seed``), so every jet is scored by a
    model that did not see it, once as original and once as reconstruction.
    (a) ``bdt``: scikit-learn's HistGradientBoostingClassifier on the observables of
        :func:`tagger_features` (every observable of ``substructure``, multiplicities included, except
        the within-tower variation); nan / inf features are passed as missing values (nan).
    (b) ``cnn``: :class:`SmallCNN` on log-scaled images ``sign(E) log1p(|E| / 0.01 GeV)`` (= the usual
        log1p(E / 0.01 GeV) on the non-negative originals; the sign keeps a reconstruction's negative
        pixels finite), channels first.
    Reported: ``auc`` (originals), ``auc_hat`` (reconstructions), ``dauc`` = auc_hat - auc with ``dauc_err``,
    the standard deviation of dauc over a paired bootstrap (the same resampled jets for both; ``n_boot``
    resamples from ``seed``) and its central 68 % interval, and ``flip_frac``: the fraction of jets whose
    decision changes, deciding "positive" when score > threshold, with the threshold the median of the
    originals' scores (a balanced working point that needs no calibration) or a given number (e.g. 0.5).
    AUC = the Mann-Whitney statistic with tied scores counted one half, equal to
    ``sklearn.metrics.roc_auc_score``. Deterministic for a given seed (and thread count).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch

from inr_fast.arrays import check_image, to_torch
from inr_fast.data.stats import zero_suppression_levels
from inr_fast.errors import DataError, InrFastError
from inr_fast.layout import GLUON, QUARK
from inr_fast.metrics import substructure as sub

#: observables whose error is a difference, not a ratio (their original value is 0)
ABSOLUTE_OBSERVABLES = ("hcal_cone_tower_var", "hcal_window_tower_var")
TOLERANCE = 0.02
CLASSES: dict[int, str] = {QUARK: "quark", GLUON: "gluon"}
#: reference energy of the CNN's log scale (GeV)
CNN_E0 = 0.01


# --------------------------------------------------------------------------------------------------
# Observable errors and the fidelity table
# --------------------------------------------------------------------------------------------------
def _np(v) -> np.ndarray:
    return v.detach().cpu().numpy() if isinstance(v, torch.Tensor) else np.asarray(v)


def observable_errors(
    obs: Mapping[str, np.ndarray], obs_hat: Mapping[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """Per-jet error of every observable present in both dicts (module docstring): (B,) each -> (B,)
    float64, relative except for :data:`ABSOLUTE_OBSERVABLES`."""
    out = {}
    with np.errstate(divide="ignore", invalid="ignore"):
        for k in obs:
            if k not in obs_hat:
                continue
            a, b = _np(obs_hat[k]).astype(np.float64), _np(obs[k]).astype(np.float64)
            if a.shape != b.shape:
                raise DataError(f"observable {k!r}: shapes {a.shape} (reconstruction) and {b.shape} differ")
            out[k] = a - b if k in ABSOLUTE_OBSERVABLES else (a - b) / b
    return out


def error_summary(err: np.ndarray, tolerance: float = TOLERANCE) -> dict[str, float]:
    """bias, res68, frac_out, n, n_undefined of one observable's per-jet errors (B,) (module docstring)."""
    err = np.asarray(err, dtype=np.float64)
    defined = err[~np.isnan(err)]
    if defined.size:
        with np.errstate(invalid="ignore"):
            q = np.quantile(defined, [0.16, 0.5, 0.84], method="linear")
            # interpolating between two infinities gives nan: take the nearest order statistic there
            q = np.where(np.isnan(q), np.quantile(defined, [0.16, 0.5, 0.84], method="nearest"), q)
            q16, q50, q84 = q
            res = 0.5 * (q84 - q16)
    else:
        q50 = res = float("nan")
    outside = np.abs(defined) > tolerance
    return {
        "bias": float(q50),
        "res68": float(res),
        "frac_out": float(outside.sum() / err.size) if err.size else float("nan"),
        "n": int(err.size),
        "n_undefined": int(err.size - defined.size),
    }


def fidelity_table(
    obs: Mapping[str, np.ndarray],
    obs_hat: Mapping[str, np.ndarray],
    labels,
    *,
    tolerance: float = TOLERANCE,
    classes: Mapping[int, str] = CLASSES,
    names: Sequence[str] | None = None,
) -> list[dict]:
    """One row per (observable, class) with :func:`error_summary` of the errors of
    :func:`observable_errors`: keys ``observable``, ``class`` ("quark", "gluon", "all"), ``bias``,
    ``res68``, ``frac_out``, ``n``, ``n_undefined``. labels (B,); ``names`` defaults to every observable."""
    err = observable_errors(obs, obs_hat)
    y = np.asarray(labels)
    rows = []
    for name in names if names is not None else list(err):
        if name not in err:
            raise DataError(f"fidelity_table: no observable {name!r}; known: {', '.join(err)}")
        e = err[name]
        if y.shape != e.shape:
            raise DataError(f"fidelity_table: labels of shape {y.shape} for {e.shape[0]} jets")
        for value, cname in list(classes.items()) + [(None, "all")]:
            sel = np.ones_like(y, dtype=bool) if value is None else y == value
            rows.append({"observable": name, "class": cname, **error_summary(e[sel], tolerance)})
    return rows


# --------------------------------------------------------------------------------------------------
# Distributions
# --------------------------------------------------------------------------------------------------
#: a readable default set for the distribution figure
# --------------------------------------------------------------------------------------------------
# AUC, ROC, bootstrap comparison
# --------------------------------------------------------------------------------------------------
def _ranks(s: np.ndarray) -> np.ndarray:
    """Average ranks (1-based) along the last axis, ties sharing their mean rank."""
    from scipy.stats import rankdata

    return rankdata(s, axis=-1, method="average")


def auc(scores, labels, positive: int = QUARK):
    """Area under the ROC curve of ``scores`` for ``labels == positive``, the Mann-Whitney statistic with
    ties counted one half: (B,) -> float; (R, B) -> (R,) (one AUC per row). nan when a class is absent."""
    s = np.asarray(scores, dtype=np.float64)
    pos = np.asarray(labels) == positive
    if pos.shape != s.shape[-1:]:
        raise DataError(f"auc: {s.shape[-1]} scores for {pos.shape} labels")
    n1, n0 = pos.sum(), (~pos).sum()
    if n1 == 0 or n0 == 0:
        return float("nan") if s.ndim == 1 else np.full(s.shape[0], np.nan)
    r = _ranks(s)
    out = (r[..., pos].sum(-1) - n1 * (n1 + 1) / 2) / (n1 * n0)
    return float(out) if s.ndim == 1 else out


def roc_curve(scores, labels, positive: int = QUARK) -> tuple[np.ndarray, np.ndarray]:
    """False- and true-positive rates (fpr, tpr) at every distinct threshold, from (0, 0) to (1, 1)."""
    s = np.asarray(scores, dtype=np.float64)
    pos = np.asarray(labels) == positive
    order = np.argsort(-s, kind="stable")
    s, pos = s[order], pos[order]
    last = np.r_[np.nonzero(np.diff(s))[0], s.size - 1]  # the last index of each distinct score
    tp = np.cumsum(pos)[last]
    fp = np.cumsum(~pos)[last]
    return np.r_[0.0, fp / max(fp[-1], 1)], np.r_[0.0, tp / max(tp[-1], 1)]


def compare_scores(
    scores,
    scores_hat,
    labels,
    *,
    positive: int = QUARK,
    n_boot: int = 1000,
    seed: int = 0,
    threshold: str | float = "median",
) -> dict[str, float]:
    """AUC of a tagger on originals and reconstructions of the same jets (B,) and their paired
    bootstrap (module docstring): ``auc``, ``auc_hat``, ``dauc``, ``dauc_err``, ``dauc_lo``, ``dauc_hi``
    (central 68 % of the bootstrap), ``flip_frac``, ``threshold``, ``n``."""
    s, sh = np.asarray(scores, dtype=np.float64), np.asarray(scores_hat, dtype=np.float64)
    y = np.asarray(labels)
    if not (s.shape == sh.shape == y.shape) or s.ndim != 1:
        raise DataError(f"compare_scores: shapes {s.shape}, {sh.shape}, {y.shape} must be equal (B,)")
    a, ah = auc(s, y, positive), auc(sh, y, positive)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, s.size, size=(n_boot, s.size))
    yb = y[idx]
    # one AUC per resample: rank each row; resamples with a single class give nan and are dropped
    pos = yb == positive
    n1, n0 = pos.sum(1), (~pos).sum(1)
    with np.errstate(divide="ignore", invalid="ignore"):
        ab = ((_ranks(s[idx]) * pos).sum(1) - n1 * (n1 + 1) / 2) / (n1 * n0)
        ahb = ((_ranks(sh[idx]) * pos).sum(1) - n1 * (n1 + 1) / 2) / (n1 * n0)
    d = (ahb - ab)[(n1 > 0) & (n0 > 0)]
    if threshold == "median":
        thr = float(np.median(s))
    elif isinstance(threshold, (int, float)) and not isinstance(threshold, bool):
        thr = float(threshold)
    else:
        raise DataError(f"compare_scores: threshold must be 'median' or a number, got {threshold!r}")
    lo, hi = np.quantile(d, [0.16, 0.84]) if d.size else (float("nan"), float("nan"))
    return {
        "auc": a,
        "auc_hat": ah,
        "dauc": ah - a,
        "dauc_err": float(d.std(ddof=1)) if d.size > 1 else float("nan"),
        "dauc_lo": float(lo),
        "dauc_hi": float(hi),
        "flip_frac": float(((s > thr) != (sh > thr)).mean()),
        "threshold": thr,
        "n": int(s.size),
    }


# --------------------------------------------------------------------------------------------------
# Taggers
# --------------------------------------------------------------------------------------------------
def tagger_features(
    obs: Mapping[str, np.ndarray], names: Sequence[str] | None = None
) -> tuple[np.ndarray, list]:
    """Feature matrix (B, F) float64 of the observables ``names`` (default: every key of ``obs`` except
    the within-tower variations), non-finite values as nan (missing), and the names used."""
    names = [k for k in obs if k not in ABSOLUTE_OBSERVABLES] if names is None else list(names)
    missing = [k for k in names if k not in obs]
    if missing:
        raise DataError(f"tagger_features: no observable(s) {missing}")
    f = np.stack([_np(obs[k]).astype(np.float64) for k in names], axis=-1)
    return np.where(np.isfinite(f), f, np.nan), names


def _bdt():
    try:
        from sklearn.ensemble import HistGradientBoostingClassifier
    except ImportError as exc:  # pragma: no cover - optional dependency
        raise InrFastError(
            "the observable tagger needs scikit-learn: pip install 'inr_fast[physics]'"
        ) from exc
    return HistGradientBoostingClassifier


def train_bdt(features, labels, *, positive: int = QUARK, seed: int = 0, max_iter: int = 200, **kwargs):
    """HistGradientBoostingClassifier on features (B, F) for ``labels == positive``; deterministic
    (``random_state=seed``, no early stopping). Extra keyword arguments go to the classifier."""
    cls = _bdt()
    model = cls(max_iter=max_iter, early_stopping=False, random_state=seed, **kwargs)
    return model.fit(np.asarray(features), (np.asarray(labels) == positive).astype(int))


def bdt_scores(model, features) -> np.ndarray:
    """Probability of the positive class: (B, F) -> (B,)."""
    return model.predict_proba(np.asarray(features))[:, 1]


def cnn_inputs(images, e0: float = CNN_E0) -> torch.Tensor:
    """Log-scaled CNN input sign(E) log1p(|E| / e0), channels first, float32: (B, H, W, C) -> (B, C, H, W)."""
    t = to_torch(images)
    check_image(t)
    return (torch.sign(t) * torch.log1p(t.abs() / e0)).permute(0, 3, 1, 2).to(torch.float32).contiguous()


class SmallCNN(torch.nn.Module):
    """A small jet-image CNN: a 5 x 5 convolution with stride 5 (one output per HCAL tower, 8 maps), a
    3 x 3 convolution (16 maps), 5 x 5 max pooling, two linear layers (32 hidden) -> one logit.
    Input (B, 3, 125, 125) from :func:`cnn_inputs` (any H, W divisible by 25)."""

    def __init__(self, channels: int = 3, size: int = 125, scale: float = 10.0) -> None:
        super().__init__()
        self.scale = scale
        self.features = torch.nn.Sequential(
            torch.nn.Conv2d(channels, 8, 5, stride=5),
            torch.nn.ReLU(),
            torch.nn.Conv2d(8, 16, 3, padding=1),
            torch.nn.ReLU(),
            torch.nn.MaxPool2d(5),
            torch.nn.Flatten(),
        )
        n = 16 * (size // 25) ** 2
        self.head = torch.nn.Sequential(torch.nn.Linear(n, 32), torch.nn.ReLU(), torch.nn.Linear(32, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x / self.scale)).squeeze(-1)


def train_cnn(
    inputs: torch.Tensor,
    labels,
    *,
    positive: int = QUARK,
    seed: int = 0,
    epochs: int = 20,
    batch_size: int = 64,
    lr: float = 3e-3,
    weight_decay: float = 1e-4,
    device: str | torch.device = "cpu",
) -> SmallCNN:
    """Train :class:`SmallCNN` on inputs (B, C, H, W) (from :func:`cnn_inputs`) for ``labels == positive``
    with Adam and the binary cross-entropy; initialisation and batch order from ``seed`` (the global
    torch RNG is left untouched)."""
    x = inputs.to(device)
    y = torch.as_tensor(np.asarray(labels) == positive, dtype=torch.float32, device=device)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = SmallCNN(x.shape[1], x.shape[-1]).to(device)
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    model.train()
    for _ in range(epochs):
        order = torch.randperm(x.shape[0], generator=gen).to(device)
        for i in range(0, x.shape[0], batch_size):
            idx = order[i : i + batch_size]
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(x[idx]), y[idx])
            loss.backward()
            opt.step()
    return model.eval()


def cnn_scores(model: SmallCNN, inputs: torch.Tensor, batch_size: int = 256) -> np.ndarray:
    """Sigmoid of the CNN's logit: (B, C, H, W) -> (B,) float64."""
    device = next(model.parameters()).device
    out = []
    with torch.inference_mode():
        for i in range(0, inputs.shape[0], batch_size):
            out.append(torch.sigmoid(model(inputs[i : i + batch_size].to(device))).double().cpu())
    return torch.cat(out).numpy()


def folds(labels, n_folds: int, seed: int = 0) -> np.ndarray:
    """Fold index (B,) in [0, n_folds): each label's jets shuffled by ``seed`` and dealt in turn."""
    y = np.asarray(labels)
    if n_folds < 2:
        raise DataError(f"folds: n_folds must be >= 2, got {n_folds}")
    out = np.empty(y.shape[0], dtype=np.int64)
    rng = np.random.default_rng(seed)
    for value in np.unique(y):
        idx = np.nonzero(y == value)[0]
        out[rng.permutation(idx)] = np.arange(idx.size) % n_folds
    return out


def cross_fit(train, score, inputs, inputs_hat, labels, *, n_folds: int = 5, seed: int = 0):
    """Out-of-fold scores of a tagger trained on originals: ``train(inputs[sel], labels[sel], seed)`` ->
    model, ``score(model, inputs[sel])`` -> scores. Returns (scores, scores_hat), each (B,)."""
    y = np.asarray(labels)
    f = folds(y, n_folds, seed)
    s, sh = np.empty(y.shape[0]), np.empty(y.shape[0])
    for k in range(n_folds):
        test = f == k
        model = train(inputs[~test], y[~test], seed + k)
        s[test] = score(model, inputs[test])
        sh[test] = score(model, inputs_hat[test])
    return s, sh


def tagger_fidelity(
    x,
    x_hat,
    labels,
    *,
    obs: Mapping[str, np.ndarray] | None = None,
    obs_hat: Mapping[str, np.ndarray] | None = None,
    levels=None,
    taggers: Sequence[str] = ("bdt", "cnn"),
    positive: int = QUARK,
    n_folds: int = 5,
    seed: int = 0,
    cnn_epochs: int = 20,
    bdt_iter: int = 200,
    n_boot: int = 1000,
    threshold: str | float = "median",
    device: str | torch.device = "cpu",
) -> dict[str, dict]:
    """Both taggers, trained on the original jets x (B, H, W, 3) and applied to x and x_hat by
    cross-fitting (module docstring). ``obs`` / ``obs_hat``:
    :func:`inr_fast.metrics.substructure.substructure`
    of x and x_hat (computed here with ``levels`` if not given). Returns ``{tagger: {**compare_scores,
    "scores": (B,), "scores_hat": (B,), "roc": (fpr, tpr), "roc_hat": (fpr, tpr)}}``."""
    y = np.asarray(labels)
    out: dict[str, dict] = {}
    for name in taggers:
        if name == "bdt":
            if obs is None or obs_hat is None:
                lv = zero_suppression_levels(x) if levels is None else levels
                obs = sub.substructure(np.asarray(x), lv) if obs is None else obs
                obs_hat = sub.substructure(np.asarray(x_hat), lv) if obs_hat is None else obs_hat
            f, names = tagger_features(obs)
            fh, _ = tagger_features(obs_hat, names)
            s, sh = cross_fit(
                lambda a, b, k: train_bdt(a, b, positive=positive, seed=k, max_iter=bdt_iter),
                bdt_scores,
                f,
                fh,
                y,
                n_folds=n_folds,
                seed=seed,
            )
        elif name == "cnn":
            s, sh = cross_fit(
                lambda a, b, k: train_cnn(a, b, positive=positive, seed=k, epochs=cnn_epochs, device=device),
                cnn_scores,
                cnn_inputs(x),
                cnn_inputs(x_hat),
                y,
                n_folds=n_folds,
                seed=seed,
            )
        else:
            raise DataError(f"tagger_fidelity: unknown tagger {name!r}; known: bdt, cnn")
        res = compare_scores(s, sh, y, positive=positive, n_boot=n_boot, seed=seed, threshold=threshold)
        res.update(scores=s, scores_hat=sh, roc=roc_curve(s, y, positive), roc_hat=roc_curve(sh, y, positive))
        out[name] = res
    return out
