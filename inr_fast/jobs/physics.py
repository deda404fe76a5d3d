"""The physics section of ``inr-fast evaluate``: how faithful a run's reconstructions are as physics.

From the per-jet substructure observables that the evaluate job measured for every fitted jet
(originals and reconstructions, judged with the run's zero-suppression levels,
:mod:`inr_fast.metrics.substructure`), this writes

``RUN/observables.npz``
    every jet's observables: ``index``, ``label``, ``orig.NAME`` and ``recon.NAME`` (one array each, in
    the order of the run's jets), so distributions can be redrawn without measuring again;
``RUN/physics.json``
    the fidelity table (:func:`inr_fast.metrics.fidelity.fidelity_table`: bias, res68 and the fraction
    of jets outside 2 % per observable and class), the Q2p rate and the rate of each of its conditions,
    and the quark/gluon taggers (:func:`inr_fast.metrics.fidelity.tagger_fidelity`): a BDT on the
    observables and a small CNN on the images, trained on originals only by cross-fitting and applied
    to originals and reconstructions of the same held-out jets: AUC, AUC of the reconstructions, their
    difference with a paired-bootstrap error, the fraction of decisions that flip, and both ROC curves.

The taggers need images, so they run on a sample of ``tagger_jets`` jets (evenly spaced over the run's
fitted, non-empty jets; all of them when there are fewer), read back from the data file and rendered
from the stored parameters, chunk by chunk. Failed and empty jets are left out of the physics section.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from inr_fast import store
from inr_fast.atomic import atomic_write_bytes
from inr_fast.errors import DataError
from inr_fast.jobs.render import render_batch
from inr_fast.layout import GLUON, QUARK
from inr_fast.metrics.fidelity import fidelity_table, tagger_fidelity
from inr_fast.progress import log

PHYSICS_NAME = "physics.json"
OBSERVABLES_NAME = "observables.npz"
#: default number of jets the taggers are trained and compared on
TAGGER_JETS = 1000
#: cross-fitting folds and CNN epochs of the evaluate job's taggers
N_FOLDS = 5
CNN_EPOCHS = 20
#: at most this many points of each ROC curve are kept in physics.json
ROC_POINTS = 201


def usable(table: dict[str, np.ndarray]) -> np.ndarray:
    """Positions (in the run's jet order) of the jets the physics section uses: neither failed nor empty."""
    bad = np.asarray(table["failed"], dtype=bool) | np.asarray(table.get("empty", 0), dtype=bool)
    return np.nonzero(~bad)[0]


def tagger_sample(table: dict[str, np.ndarray], n: int) -> np.ndarray:
    """Positions of ``n`` usable jets evenly spaced over the run (all usable jets if fewer)."""
    pos = usable(table)
    if n <= 0 or pos.size <= n:
        return pos if n > 0 else pos[:0]
    return pos[np.unique(np.linspace(0, pos.size - 1, n).round().astype(np.int64))]


def sample_images(
    run: Path, cfg: store.RunConfig, indices: np.ndarray, data: str | None, device
) -> tuple[np.ndarray, np.ndarray]:
    """Originals and reconstructions (k, 125, 125, 3) float32 GeV of the jets with dataset ``indices``
    (all fitted), rendered from their chunks' stored parameters."""
    indices = np.asarray(indices, dtype=np.int64)
    where = {int(j): k for k, j in enumerate(indices)}
    x = x_hat = None
    with store.open_data(run, cfg, data) as jf:
        for chunk in store.run_state(run, cfg)["done"]:
            idx = cfg.chunk_indices(chunk)
            hit = np.nonzero(np.isin(idx, indices))[0]
            if hit.size == 0:
                continue
            result = store.load_chunk(run, chunk, cfg)
            pos = np.nonzero(np.isin(result.indices, idx[hit]))[0]
            orig = jf.read(result.indices[pos])
            recon = render_batch(result, pos, device)
            if x is None:
                x = np.zeros((len(indices), *orig.shape[1:]), np.float32)
                x_hat = np.zeros_like(x)
            dest = [where[int(j)] for j in result.indices[pos]]
            x[dest], x_hat[dest] = orig, recon
    if x is None:
        raise DataError(f"{run}: none of the {len(indices)} sampled jets is in a fitted chunk")
    return x, x_hat


def _thin(curve: tuple[np.ndarray, np.ndarray], n: int = ROC_POINTS) -> list[list[float]]:
    fpr, tpr = (np.asarray(c, dtype=np.float64) for c in curve)
    if fpr.size > n:
        keep = np.unique(np.linspace(0, fpr.size - 1, n).round().astype(np.int64))
        fpr, tpr = fpr[keep], tpr[keep]
    return [fpr.round(6).tolist(), tpr.round(6).tolist()]


def _finite(v: float) -> float | None:
    return float(v) if np.isfinite(v) else None


def physics_section(
    run: Path,
    cfg: store.RunConfig,
    table: dict[str, np.ndarray],
    obs: dict[str, np.ndarray],
    *,
    tagger_jets: int = TAGGER_JETS,
    data: str | None = None,
    device="cpu",
    seed: int = 0,
    cnn_epochs: int = CNN_EPOCHS,
    n_folds: int = N_FOLDS,
) -> tuple[dict, dict[str, np.ndarray]]:
    """physics.json content and observables.npz arrays of a run (module docstring). ``obs``: the
    observables evaluate measured (``orig.NAME`` / ``recon.NAME``, in the order of ``table``)."""
    keep = usable(table)
    labels = np.asarray(table["label"], dtype=np.int64)
    names = sorted({k.split(".", 1)[1] for k in obs if k.startswith("orig.")})
    orig = {k: np.asarray(obs[f"orig.{k}"])[keep] for k in names}
    recon = {k: np.asarray(obs[f"recon.{k}"])[keep] for k in names}
    out: dict = {
        "n_jets": int(keep.size),
        "n_left_out": int(len(labels) - keep.size),
        "tolerance": 0.02,
        "fidelity": fidelity_table(orig, recon, labels[keep]) if keep.size else [],
    }
    q_names = [k for k in table if k == "q2p" or k.startswith("q2p_")]
    out["q2p"] = {k: float(np.mean(np.asarray(table[k])[keep])) if keep.size else None for k in q_names}
    sample = tagger_sample(table, tagger_jets)
    classes = set(labels[sample].tolist())
    taggers: dict = {}
    if tagger_jets <= 0:
        out["taggers_note"] = "taggers not run (--tagger-jets 0)"
    elif not {QUARK, GLUON} <= classes or min(np.sum(labels[sample] == c) for c in (QUARK, GLUON)) < n_folds:
        out["taggers_note"] = (
            f"taggers not run: the {sample.size} sampled jets need at least {n_folds} quark and "
            f"{n_folds} gluon jets"
        )
    else:
        log.info("%s: training quark/gluon taggers on %d original jets (%d folds)", run, sample.size, n_folds)
        idx = np.asarray(table["index"], dtype=np.int64)[sample]
        x, x_hat = sample_images(run, cfg, idx, data, device)
        where = {int(p): k for k, p in enumerate(keep)}
        rows = np.asarray([where[int(p)] for p in sample])
        res = tagger_fidelity(
            x,
            x_hat,
            labels[sample],
            obs={k: v[rows] for k, v in orig.items()},
            obs_hat={k: v[rows] for k, v in recon.items()},
            seed=seed,
            cnn_epochs=cnn_epochs,
            n_folds=n_folds,
            device=device,
        )
        for name, r in res.items():
            taggers[name] = {
                k: (_finite(v) if isinstance(v, float) else v)
                for k, v in r.items()
                if k not in ("scores", "scores_hat", "roc", "roc_hat")
            }
            taggers[name]["roc"] = _thin(r["roc"])
            taggers[name]["roc_hat"] = _thin(r["roc_hat"])
        out["tagger_sample"] = {
            "n": int(sample.size),
            "seed": seed,
            "n_folds": n_folds,
            "cnn_epochs": cnn_epochs,
        }
    out["taggers"] = taggers
    arrays = {"index": np.asarray(table["index"], dtype=np.int64), "label": labels}
    arrays.update({k: np.asarray(v) for k, v in obs.items()})
    return out, arrays


def write_physics(run: Path, section: dict, arrays: dict[str, np.ndarray]) -> dict[str, str]:
    """Write RUN/observables.npz and RUN/physics.json (atomically, replacing older ones); returns their
    sha256 digests for summary.json to vouch for them."""
    import hashlib  # noqa: PLC0415
    import io  # noqa: PLC0415

    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    npz = buf.getvalue()
    text = (json.dumps(_jsonable(section), indent=1, allow_nan=False) + "\n").encode()
    atomic_write_bytes(run / OBSERVABLES_NAME, npz, overwrite=True)
    atomic_write_bytes(run / PHYSICS_NAME, text, overwrite=True)
    return {
        OBSERVABLES_NAME: hashlib.sha256(npz).hexdigest(),
        PHYSICS_NAME: hashlib.sha256(text).hexdigest(),
    }


def _jsonable(v):
    """nan / inf -> None, numpy scalars -> Python, recursively (physics.json is strict JSON)."""
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (float, np.floating)):
        return float(v) if np.isfinite(v) else None
    if isinstance(v, torch.Tensor):
        return _jsonable(v.tolist())
    return v


def read_physics(run: str | Path) -> tuple[dict, dict[str, np.ndarray]] | None:
    """physics.json and observables.npz of a run, or None if it has none."""
    run = Path(run)
    if not (run / PHYSICS_NAME).exists() or not (run / OBSERVABLES_NAME).exists():
        return None
    section = json.loads((run / PHYSICS_NAME).read_text())
    with np.load(run / OBSERVABLES_NAME) as z:
        arrays = {k: z[k] for k in z.files}
    return section, arrays


#: observables of the printed physics table (all are in physics.json)
PRINTED_OBSERVABLES = (
    "calo_cone_pt",
    "calo_cone_mass",
    "calo_cone_girth",
    "calo_cone_e2",
    "calo_cone_tau21",
    "calo_cone_n_zs",
    "tracks_cone_n_zs",
    "hcal_window_tower_var",
)


def _pct(v) -> str:
    return "n/a" if v is None or not np.isfinite(v) else f"{100 * v:+.2f}"


def _gev(v) -> str:
    return "n/a" if v is None or not np.isfinite(v) else f"{v:+.3g} (abs.)"


def _num(v, fmt: str) -> str:
    return "n/a" if v is None or not np.isfinite(v) else format(v, fmt)


def format_physics(section: dict) -> str:
    """The printed physics section: Q2p and its conditions, the bias / resolution / fraction outside
    2 % of the main observables (all jets), and the taggers' AUCs."""
    lines = [f"physics ({section['n_jets']} jets; {section['n_left_out']} failed or empty left out)"]
    q = section.get("q2p") or {}
    if "q2p" in q and q["q2p"] is not None:
        conds = ", ".join(f"{k[4:]} {100 * v:.1f} %" for k, v in q.items() if k != "q2p" and v is not None)
        lines.append(f"Q2p (Q2 and physics conditions) reached by {100 * q['q2p']:.1f} % of jets ({conds})")
    rows = [
        r
        for r in section.get("fidelity", [])
        if r["class"] == "all" and r["observable"] in PRINTED_OBSERVABLES
    ]
    if rows:
        lines.append("| Observable | bias (%) | res68 (%) | outside 2 % |")
        lines.append("|---|---|---|---|")
        for r in sorted(rows, key=lambda r: PRINTED_OBSERVABLES.index(r["observable"])):
            absolute = r["observable"].endswith("tower_var")
            unit = _gev if absolute else _pct
            lines.append(
                f"| {r['observable']} | {unit(r['bias'])} | {unit(r['res68'])} | "
                f"{100 * (r['frac_out'] or 0):.1f} % |"
            )
    for name, t in (section.get("taggers") or {}).items():
        lines.append(
            f"{name} tagger on {t['n']} jets: AUC {_num(t['auc'], '.4f')} originals, "
            f"{_num(t['auc_hat'], '.4f')} reconstructions (dAUC {_num(t['dauc'], '+.4f')} +- "
            f"{_num(t['dauc_err'], '.4f')}); {_num(100 * t['flip_frac'], '.1f')} % of decisions flip"
        )
    return "\n".join(lines)
