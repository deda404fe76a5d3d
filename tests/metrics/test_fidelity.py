"""Physics fidelity: bias/resolution tables against known perturbations, AUC/ROC/bootstrap against
scikit-learn, taggers (determinism, identical reconstructions), Q2p conditions against hand-made
reconstructions, figures."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from inr_fast.data.stats import zero_suppression_levels
from inr_fast.errors import DataError
from inr_fast.layout import PITCH
from inr_fast.metrics import fidelity as fd
from inr_fast.metrics import substructure as ss
from inr_fast.metrics.levels import q2p, quality_levels
from inr_fast.report.physics import distribution_figure, roc_figure
from tests.physics_toys import toy_jets

CHEAP = tuple(n for n in ss.OBSERVABLES if n not in ("e3", "c2", "tau1", "tau2", "tau21"))


@pytest.fixture(scope="module")
def toys():
    images, labels = toy_jets(200, seed=7)
    return images.astype(np.float64), labels


# ------------------------------------------------------------------------------------ the table
def test_error_summary_values():
    err = np.linspace(-0.0505, 0.0495, 101)  # steps of 0.001, none on the +-0.02 boundary
    s = fd.error_summary(np.r_[err, np.nan, np.inf])
    # 102 defined values: the 101 of the grid and +inf; median between the 51st and 52nd
    assert s["bias"] == pytest.approx(0.0, abs=1e-12)
    q16, q84 = np.quantile(np.r_[err, np.inf], [0.16, 0.84])  # linear interpolation
    assert q16 == pytest.approx(-0.0505 + 0.16 * 101 * 0.001) and q84 == pytest.approx(
        -0.0505 + 0.84 * 101 * 0.001
    )
    assert s["res68"] == pytest.approx(0.5 * 0.68 * 101 * 0.001)
    # |err| > 0.02: 31 below, 30 above, plus the inf; the nan (0/0) counts as inside
    assert s["frac_out"] == pytest.approx(62 / 103)
    assert (s["n"], s["n_undefined"]) == (103, 1)
    many = fd.error_summary(np.r_[np.full(6, np.inf), 0.01, -0.03, 0.0])  # no warning, no nan
    assert many["bias"] == np.inf and many["res68"] == np.inf and many["frac_out"] == pytest.approx(7 / 9)
    with np.errstate(invalid="ignore", divide="ignore"):
        e = fd.observable_errors(
            {"a": np.array([0.0, 2.0, 0.0]), "hcal_window_tower_var": np.zeros(3)},
            {"a": np.array([0.0, 3.0, 1.0]), "hcal_window_tower_var": np.array([0.1, 0.0, 0.2])},
        )
    np.testing.assert_array_equal(e["a"], [np.nan, 0.5, np.inf])
    np.testing.assert_array_equal(e["hcal_window_tower_var"], [0.1, 0.0, 0.2])  # a difference


def test_known_scale_gives_known_bias(toys):
    """x_hat = 1.03 x: pT and masses +3 % in every jet, the scale-free observables unchanged."""
    x, y = toys[0][:16], toys[1][:16]
    levels = zero_suppression_levels(x)
    obs = ss.substructure(x, levels)
    obs_hat = ss.substructure(1.03 * x, levels)
    rows = {(r["observable"], r["class"]): r for r in fd.fidelity_table(obs, obs_hat, y)}
    assert {c for _, c in rows} == {"quark", "gluon", "all"}
    for group in ("calo", "tracks"):
        for region in ("cone", "window"):
            for cls in ("quark", "gluon", "all"):
                for name in ("pt", "mass"):
                    r = rows[(f"{group}_{region}_{name}", cls)]
                    assert r["bias"] == pytest.approx(0.03, abs=1e-12)
                    assert r["res68"] == pytest.approx(0.0, abs=1e-12)
                    assert r["frac_out"] == 1.0
                for name in ("girth", "ptd", "lead_frac", "e2", "c2", "tau21", "n_pos", "n_zs"):
                    r = rows[(f"{group}_{region}_{name}", cls)]
                    assert abs(r["bias"]) < 1e-9 and r["res68"] < 1e-9 and r["frac_out"] == 0.0, name
    assert rows[("calo_cone_pt", "quark")]["n"] == 8
    # the parametrised calorimeter spreads each HCAL tower uniformly: no within-tower variation at all
    assert (obs["hcal_window_n_pos"] > 0).all() and (obs["hcal_window_tower_var"] == 0).all()
    r = rows[("hcal_window_tower_var", "all")]
    assert r["bias"] == 0.0 and r["frac_out"] == 0.0


# ------------------------------------------------------------------------------- AUC and ROC
def test_auc_and_roc_equal_sklearn():
    from sklearn.metrics import roc_auc_score, roc_curve

    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 300)
    s = np.round(rng.normal(y * 0.7, 1.0), 1)  # rounded: many ties
    assert fd.auc(s, y) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    assert fd.auc(s, y, positive=0) == pytest.approx(roc_auc_score(1 - y, s), abs=1e-12)
    fpr, tpr = fd.roc_curve(s, y)
    ref_fpr, ref_tpr, _ = roc_curve(y, s, drop_intermediate=False)
    np.testing.assert_allclose(fpr, ref_fpr, atol=1e-12)
    np.testing.assert_allclose(tpr, ref_tpr, atol=1e-12)
    assert math.isnan(fd.auc(s, np.ones_like(y)))


def test_compare_scores_bootstrap_and_flips():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 120)
    s = rng.normal(y, 1.0)
    same = fd.compare_scores(s, s.copy(), y, n_boot=200)
    assert same["dauc"] == 0.0 and same["dauc_err"] == 0.0 and same["flip_frac"] == 0.0
    # swap the scores of two jets on opposite sides of the median: exactly two flips
    order = np.argsort(s)
    lo, hi = order[10], order[-10]
    sh = s.copy()
    sh[lo], sh[hi] = s[hi], s[lo]
    res = fd.compare_scores(s, sh, y, n_boot=300, seed=4)
    assert res["flip_frac"] == pytest.approx(2 / 120)
    assert res["threshold"] == pytest.approx(np.median(s))
    assert res["dauc"] == pytest.approx(roc_auc_score(y, sh) - roc_auc_score(y, s), abs=1e-12)
    # the paired bootstrap, recomputed with sklearn on the same resampled jets
    idx = np.random.default_rng(4).integers(0, 120, size=(300, 120))
    d = np.array([roc_auc_score(y[i], sh[i]) - roc_auc_score(y[i], s[i]) for i in idx])
    assert res["dauc_err"] == pytest.approx(d.std(ddof=1), rel=1e-10)
    assert (res["dauc_lo"], res["dauc_hi"]) == pytest.approx(tuple(np.quantile(d, [0.16, 0.84])), rel=1e-10)
    assert fd.compare_scores(s, sh, y, threshold=0.5)["flip_frac"] == pytest.approx(
        np.mean((s > 0.5) != (sh > 0.5))
    )
    with pytest.raises(DataError, match="threshold"):
        fd.compare_scores(s, sh, y, threshold="mean")


def test_folds_are_stratified_and_seeded():
    y = np.array([1] * 30 + [0] * 20)
    f = fd.folds(y, 5, seed=3)
    for k in range(5):
        assert ((f == k) & (y == 1)).sum() == 6 and ((f == k) & (y == 0)).sum() == 4
    np.testing.assert_array_equal(f, fd.folds(y, 5, seed=3))
    assert not np.array_equal(f, fd.folds(y, 5, seed=4))


# --------------------------------------------------------------------------------------- taggers
def test_cnn_inputs_values():
    x = np.zeros((1, 125, 125, 3))
    x[0, 3, 4, 0], x[0, 5, 6, 2] = 1.0, -0.02
    t = fd.cnn_inputs(x)
    assert t.shape == (1, 3, 125, 125) and t.dtype == torch.float32
    assert float(t[0, 0, 3, 4]) == pytest.approx(math.log1p(100.0))
    assert float(t[0, 2, 5, 6]) == pytest.approx(-math.log1p(2.0))
    assert float(t.abs().sum()) == pytest.approx(math.log1p(100.0) + math.log1p(2.0))


def test_taggers_identical_reconstruction_and_determinism(toys, one_thread):
    x, y = toys
    levels = zero_suppression_levels(x)
    obs = ss.substructure(x, levels, names=CHEAP)
    kw = dict(n_folds=2, cnn_epochs=3, bdt_iter=30, n_boot=100, seed=5)
    res = fd.tagger_fidelity(x, x.copy(), y, obs=obs, obs_hat=obs, **kw)
    again = fd.tagger_fidelity(x, x, y, obs=obs, obs_hat=obs, taggers=("cnn",), **kw)
    for name in ("bdt", "cnn"):
        r = res[name]
        assert r["dauc"] == 0.0 and r["flip_frac"] == 0.0 and r["dauc_err"] == 0.0
        assert r["auc"] > 0.65, name  # the toy quark and gluon jets differ: the taggers learn
        from sklearn.metrics import roc_auc_score

        assert r["auc"] == pytest.approx(roc_auc_score(y, r["scores"]), abs=1e-12)
    np.testing.assert_array_equal(again["cnn"]["scores"], res["cnn"]["scores"])  # deterministic
    # a faint positive floor on every empty pixel: the log-scaled CNN input changes everywhere
    floor = x + 0.003 * (x == 0)
    moved = fd.tagger_fidelity(x, floor, y, taggers=("cnn",), **kw)
    assert moved["cnn"]["flip_frac"] > 0.0
    np.testing.assert_array_equal(moved["cnn"]["scores"], res["cnn"]["scores"])  # trained on originals
    with pytest.raises(DataError, match="unknown tagger"):
        fd.tagger_fidelity(x, x, y, obs=obs, obs_hat=obs, taggers=("svm",))


# ------------------------------------------------------------------------------------------ Q2p
def _jet() -> np.ndarray:
    x = np.zeros((125, 125, 3))
    x[62, 62, 0], x[62, 66, 0], x[92, 62, 0] = 30.0, 10.0, 5.0  # A, B (cone), C (outside the cone)
    x[60:65, 60:65, 1] = 0.4  # one uniform HCAL tower
    x[62, 63, 2], x[63, 62, 2] = 8.0, 2.0
    return x


LV = np.array([0.1, 0.01, 0.5])


def test_q2p_identical_and_q2_matches_metrics(toys):
    x = toys[0][:6]
    levels = zero_suppression_levels(x)
    q = q2p(x, x, levels=levels)
    assert q["Q2p"].all() and q["evaluated"].all()
    rng = np.random.default_rng(0)
    noisy = x * (1 + 0.03 * rng.standard_normal(x.shape))
    q = q2p(noisy, x, levels=levels, lazy=False)
    np.testing.assert_array_equal(q["Q2"], quality_levels(noisy, x)["Q2"])


def test_q2p_conditions_by_hand():
    x = _jet()
    # a floor pixel just above the ECAL level, far from the jet: floor fails, counts +1 of 7 ECAL pixels
    h = x.copy()
    h[10, 10, 0] = 0.11
    q = q2p(h, x, levels=LV)
    assert not q["floor"][0] and q["floor_max_ecal"][0] == pytest.approx(0.11)
    assert q["count_rel_err_ecal"][0] == pytest.approx(1 / 3) and not q["counts"][0]
    assert not q["Q2p"][0] and not q["evaluated"][0] and not q["cone_mass"][0]
    # the same below the level: floor and counts hold; its absolute off-support share is known
    h[10, 10, 0] = 0.09
    q = q2p(h, x, levels=LV)
    assert q["floor"][0] and q["counts"][0]
    calo = x[..., :2].sum()
    assert q["off_support_abs"][0] == pytest.approx(0.09 / calo)
    # a +-d checkerboard on empty ECAL pixels: totals exact, absolute off-support 2 % -> fails
    h = x.copy()
    d = 0.02 * calo / 400
    h[100:120, 100:120, 0] = d * np.where((np.arange(20)[:, None] + np.arange(20)) % 2 == 0, 1, -1)
    q = q2p(h, x, levels=LV)
    assert q["sums"][0] and q["off_support_abs"][0] == pytest.approx(0.02) and not q["off_support"][0]
    # pixel B +3 %: cone mass (A and B only) scales as sqrt(1.03), beyond 1 %
    h = x.copy()
    h[62, 66, 0] *= 1.03
    q = q2p(h, x, levels=LV)
    assert q["Q2"][0] and q["off_support"][0] and q["floor"][0] and q["counts"][0] and q["evaluated"][0]
    lv = np.asarray(LV)
    o = ss.substructure(x, lv, groups=("calo",), regions=("cone",), names=("mass", "girth", "e2"))
    oh = ss.substructure(h, lv, groups=("calo",), regions=("cone",), names=("mass", "girth", "e2"))
    assert q["cone_mass_rel_err"][0] == pytest.approx(
        oh["calo_cone_mass"] / o["calo_cone_mass"] - 1, rel=1e-12
    )
    # the HCAL tower adds to the cone mass, so the +3 % on B moves it by less than sqrt(1.03) - 1
    assert 0 < q["cone_mass_rel_err"][0] < math.sqrt(1.03) - 1
    fb = 4 * PITCH
    assert x[62, 66, 0] * fb > 0  # B sits at (0, 4 pitch)
    assert q["cone_mass"][0] == (abs(q["cone_mass_rel_err"][0]) <= 0.01)
    assert q["Q2p"][0] == (q["cone_mass"][0] and q["cone_girth"][0] and q["cone_e2"][0])


def test_q2p_lazy_and_eager_agree():
    x = np.stack([_jet(), _jet()])
    h = x.copy()
    h[0, 62, 66, 0] *= 1.005  # passes the cheap conditions
    h[1, 10, 10, 1] = 0.5  # fails the floor
    lazy, eager = q2p(h, x, levels=LV), q2p(h, x, levels=LV, lazy=False)
    assert lazy["evaluated"].tolist() == [True, False] and eager["evaluated"].all()
    assert lazy["cone_mass_rel_err"][0] == eager["cone_mass_rel_err"][0]
    assert np.isnan(lazy["cone_mass_rel_err"][1]) and eager["cone_mass_rel_err"][1] == 0.0
    np.testing.assert_array_equal(lazy["Q2p"], eager["Q2p"])
    assert lazy["Q2p"].tolist() == [True, False]
    with pytest.raises(DataError, match="differs"):
        q2p(h[:, :100], x, levels=LV)


# --------------------------------------------------------------------------------------- figures
def test_figures(toys, tmp_path):
    x, y = toys[0][:40], toys[1][:40]
    levels = zero_suppression_levels(x)
    obs = ss.substructure(x, levels, names=CHEAP)
    names = ["calo_cone_mass", "calo_cone_n_pos", "hcal_window_tower_var"]
    fig = distribution_figure(obs, obs, y, names)
    assert len(fig.axes) == 2 * len(names)
    for ax in fig.axes[1::2]:  # ratio panels: identical samples give ratio 1 in every filled bin
        pts = np.concatenate([line.get_ydata() for line in ax.lines if line.get_linestyle() == "None"])
        assert pts.size and np.all(pts == 1.0)
    fig.savefig(tmp_path / "dist.png")
    res = {"bdt": fd.compare_scores(obs["calo_cone_mass"], obs["calo_cone_mass"], y, n_boot=50)}
    res["bdt"].update(
        roc=fd.roc_curve(obs["calo_cone_mass"], y), roc_hat=fd.roc_curve(obs["calo_cone_mass"], y)
    )
    roc_figure(res).savefig(tmp_path / "roc.png")
    assert (tmp_path / "dist.png").stat().st_size > 10_000 and (tmp_path / "roc.png").stat().st_size > 5_000
    with pytest.raises(DataError, match="none of the requested"):
        distribution_figure(obs, obs, y, ["nope"])
