"""inr-fast bench --physics: the target checks on hand-made observables, and its argument checks."""

from __future__ import annotations

import numpy as np

from inr_fast.bench.physics import format_physics_bench, observable_targets
from inr_fast.cli import main


def _arrays(err_quark: np.ndarray, err_gluon: np.ndarray, tower_hat: float) -> dict[str, np.ndarray]:
    n = len(err_quark)
    labels = np.r_[np.ones(n, int), np.zeros(n, int)]
    orig = np.full(2 * n, 10.0)
    return {
        "index": np.arange(2 * n),
        "label": labels,
        "orig.mass": orig,
        "recon.mass": orig * (1 + np.r_[err_quark, err_gluon]),
        "orig.hcal_window_tower_var": np.zeros(2 * n),
        "recon.hcal_window_tower_var": np.full(2 * n, tower_hat),
        "orig.tracks_cone_pt": np.zeros(2 * n),  # an empty cone: 0 / 0, undefined, not a miss
        "recon.tracks_cone_pt": np.zeros(2 * n),
    }


def test_observable_targets_by_hand():
    # quarks: errors 0 +- 1.5 % (inside); gluons: median +1.5 % (a bias miss)
    q = np.linspace(-0.015, 0.015, 101)
    g = q + 0.015
    rows = observable_targets(_arrays(q, g, 0.005), np.ones(202, bool))
    by = {(r["observable"], r["class"]): r for r in rows}
    assert by[("mass", "quark")]["ok"] and not by[("mass", "gluon")]["ok"]
    assert abs(by[("mass", "gluon")]["median"] - 0.015) < 1e-12
    # the central 68 % of 101 evenly spaced errors: the 16th and 84th percentiles (nearest)
    assert (
        abs(by[("mass", "quark")]["q16"] - q[16]) < 1e-12
        and abs(by[("mass", "quark")]["q84"] - q[84]) < 1e-12
    )
    assert by[("hcal_window_tower_var", "quark")]["ok"]  # absolute 0.005 <= 0.01
    assert by[("tracks_cone_pt", "gluon")]["n"] == 0 and by[("tracks_cone_pt", "gluon")]["ok"]
    # a 68 % interval wider than +-2 % misses although the median is 0
    wide = observable_targets(_arrays(np.linspace(-0.05, 0.05, 101), q, 0.02), np.ones(202, bool))
    by = {(r["observable"], r["class"]): r for r in wide}
    assert not by[("mass", "quark")]["ok"] and not by[("hcal_window_tower_var", "quark")]["ok"]
    # jets left out (failed / empty) do not count
    keep = np.r_[np.zeros(101, bool), np.ones(101, bool)]
    assert {r["n"] for r in observable_targets(_arrays(q, q, 0.0), keep) if r["class"] == "quark"} == {0}


def test_format_names_the_misses():
    rows = observable_targets(_arrays(np.full(5, 0.03), np.zeros(5), 0.0), np.ones(10, bool))
    result = {
        "sets": {
            "A": {
                "simulation": {"n": 10},
                "q2p": {"q2p": 0.9},
                "observables": rows,
                "taggers": {"bdt": {"dauc": -0.001, "dauc_err": 0.002, "flip_frac": 0.01}},
                "s_per_jet": 0.3,
                "seed_q2_s_per_jet": 150.0,
                "speedup_q2": 500.0,
                "bytes_per_jet": 45000.0,
                "storage": {"sparse_gzip_float32": 1600.0, "sparse_gzip_float16": 1300.0},
            }
        }
    }
    text = format_physics_bench(result)
    assert "| A | 10 | 90.0 % | 3.00 |" in text
    assert "- set A, mass (quark): median +3.00 %" in text
    assert "-0.0010 ± 0.0020 (1.0 %)" in text


def test_physics_bench_refuses_bad_arguments(capsys, tmp_path):
    assert main(["bench", "--physics", "--n", "4", "--out", str(tmp_path / "x.json")]) == 2
    assert "--n must be at least 10" in capsys.readouterr().err
