"""The physics section of inr-fast evaluate: observables, Q2p, fidelity table and taggers against the
single functions applied to the originals read from the file and the per-jet renders."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest

from inr_fast import store
from inr_fast.cli import main
from inr_fast.data.stats import DataStats
from inr_fast.jobs.evaluate import EvaluateCommand, evaluate, outputs_state, read_metrics
from inr_fast.jobs.fit import FitCommand, fit_run
from inr_fast.jobs.physics import read_physics, tagger_sample
from inr_fast.metrics.fidelity import fidelity_table, tagger_fidelity
from inr_fast.metrics.levels import q2p
from inr_fast.metrics.substructure import substructure
from tests.helpers import jet_like


def _renders(run, indices) -> np.ndarray:
    return np.stack([store.load_jet(run, int(i)).render() for i in indices])


def test_evaluate_physics_values(fitted, capsys):
    run, originals = fitted
    assert main(["evaluate", str(run), "--quiet", "--overwrite", "--no-lpips"]) == 0
    out = capsys.readouterr().out
    assert "physics (3 jets" in out and "taggers not run" in out  # 3 jets: too few for the taggers
    section, arrays = read_physics(run)
    # the levels are the originals' smallest positive value per channel
    levels = DataStats.of(originals).levels()
    np.testing.assert_allclose(levels, [originals[..., c][originals[..., c] > 0].min() for c in range(3)])
    recon = _renders(run, range(3))
    want_orig, want_recon = substructure(originals, levels), substructure(recon, levels)
    assert arrays["index"].tolist() == [0, 1, 2]
    for name in want_orig:
        np.testing.assert_allclose(arrays[f"orig.{name}"], want_orig[name], rtol=1e-6, err_msg=name)
        np.testing.assert_allclose(
            arrays[f"recon.{name}"], want_recon[name], rtol=1e-5, atol=1e-9, err_msg=name
        )
    # Q2p per jet in metrics.csv equals the single function's
    table = read_metrics(run / "metrics.csv")
    want = q2p(recon, originals, levels=levels, lazy=False)
    assert table["q2p"].tolist() == want["Q2p"].astype(int).tolist()
    assert table["q2p_off_support"].tolist() == np.asarray(want["off_support"]).astype(int).tolist()
    assert section["q2p"]["q2p"] == pytest.approx(want["Q2p"].mean())
    # the fidelity table: the same rows as fidelity_table (nan -> null in JSON)
    rows = fidelity_table(want_orig, want_recon, table["label"])
    got = {(r["observable"], r["class"]): r for r in section["fidelity"]}
    assert len(got) == len(rows)
    for r in rows:
        g = got[(r["observable"], r["class"])]
        for k in ("bias", "res68", "frac_out"):
            if np.isnan(r[k]):
                assert g[k] is None
            else:
                assert g[k] == pytest.approx(r[k], rel=1e-5, abs=1e-9), (r["observable"], k)
    # summary.json vouches for physics.json; a damaged one is noticed and redone
    summary = json.loads((run / "summary.json").read_text())
    state = store.run_state(run, store.read_config(run))
    assert outputs_state(run, state, False, True, 1000) == "current"
    assert outputs_state(run, state, False, False, 0) == "stale"
    (run / "physics.json").write_text("{}")
    assert outputs_state(run, state, False, True, 1000) == "incomplete"
    assert summary["physics_sha256"]
    assert main(["evaluate", str(run), "--quiet", "--no-lpips"]) == 0
    assert read_physics(run)[0]["fidelity"]


@pytest.fixture(scope="module")
def twelve(tmp_path_factory):
    """A run of 12 jet-like images, 6 quark and 6 gluon (gluons wider and with more particles)."""
    root = tmp_path_factory.mktemp("physics")
    rng = np.random.default_rng(5)
    x = jet_like(rng, 12)
    labels = np.array([1, 0] * 6)
    x[labels == 0] += 0.5 * jet_like(rng, 6) * (rng.random((6, 1, 1, 1)) + 0.5)
    with h5py.File(root / "jets.h5", "w") as f:
        f["X_jets"] = x
        f["y"] = labels.astype(np.float32)
        f["m0"] = np.full(12, 20.0, np.float32)
        f["pt"] = np.full(12, 100.0, np.float32)
    cmd = FitCommand(
        file=str(root / "jets.h5"),
        out=str(root / "run"),
        preset="compact",
        max_steps=3,
        batch_size=6,
        device="cpu",
        progress=False,
    )
    fit_run(cmd)
    return root / "run", x, labels


def test_taggers_on_a_sample(twelve):
    run, x, labels = twelve
    cmd = EvaluateCommand(str(run), lpips="no", progress=False, tagger_jets=10)
    _, summary, text = evaluate(cmd)
    section, _ = read_physics(run)
    table = read_metrics(run / "metrics.csv")
    sample = tagger_sample(table, 10)
    assert section["tagger_sample"]["n"] == len(sample) == 10
    assert sample.tolist() == [0, 1, 2, 4, 5, 6, 7, 9, 10, 11]  # round(linspace(0, 11, 10))
    idx = table["index"][sample]
    levels = DataStats.of(x).levels()
    recon = _renders(run, idx)
    want = tagger_fidelity(x[idx], recon, labels[idx], levels=levels, cnn_epochs=20, seed=0)
    for name in ("bdt", "cnn"):
        got = section["taggers"][name]
        for k in ("auc", "auc_hat", "dauc", "flip_frac"):
            assert got[k] == pytest.approx(want[name][k], abs=1e-9), (name, k)
        assert got["roc"][0][0] == 0.0 and got["roc"][0][-1] == 1.0
    assert "bdt tagger on 10 jets" in text
    assert summary["tagger_jets"] == 10


def test_report_shows_taggers(twelve):
    from inr_fast.report.html import ReportCommand, write_report

    run, _, _ = twelve
    page = write_report(ReportCommand(str(run), lpips="no", progress=False, tagger_jets=10)).read_text()
    section = json.loads((run / "physics.json").read_text())
    assert (run / "roc.png").is_file() and (run / "observables.png").is_file()
    for name, t in section["taggers"].items():
        assert f"<td>{name}</td><td>10</td><td>{t['auc']:.4f}</td><td>{t['auc_hat']:.4f}</td>" in page
