"""``inr-fast evaluate`` and ``inr-fast report`` end to end on a tiny fitted run, the figure helpers, and
the report opened in a real headless browser (Debian's ``chromium``; skipped only when not installed).

The run: three sparse jets (two quark, one gluon) written with h5py, fitted with the ``compact`` preset
for a few steps in two chunks. Metrics are checked against :func:`inr_fast.metrics.compute_all` on
reconstructions rendered independently, jet by jet, from the stored parameters
(:func:`inr_fast.store.load_jet`), and on originals read with h5py directly.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import h5py
import numpy as np
import pytest

from inr_fast import report
from inr_fast.cli import main
from inr_fast.figures import curve_band, plot_distributions, residual_norm, residual_ticks
from inr_fast.metrics import compute_all

N_JETS = 3
LABELS = np.array([1, 0, 1])
STEPS = 20


def _write_jets(path: Path) -> np.ndarray:
    rng = np.random.default_rng(11)
    x = np.zeros((N_JETS, 125, 125, 3), np.float32)
    for j in range(N_JETS):
        for c in range(3):
            rows = np.clip(rng.normal(62, 6, 30).astype(int), 0, 124)
            cols = np.clip(rng.normal(62, 6, 30).astype(int), 0, 124)
            x[j, rows, cols, c] = rng.exponential(4.0, 30).astype(np.float32) + 0.1
    with h5py.File(path, "w") as f:
        f["X_jets"] = x
        f["y"] = LABELS.astype(np.float32)
        f["m0"] = np.full(N_JETS, 30.0, np.float32)
        f["pt"] = np.full(N_JETS, 120.0, np.float32)
    return x


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """(run directory, originals) of a tiny fitted run (compact preset, 20 steps, chunks of 2 jets)."""
    from inr_fast.train import FitCommand, fit_run

    root = tmp_path_factory.mktemp("report")
    originals = _write_jets(root / "jets.h5")
    cmd = FitCommand(
        file=str(root / "jets.h5"),
        out=str(root / "run"),
        preset="compact",
        max_steps=STEPS,
        batch_size=2,
        device="cpu",
        progress=False,
    )
    fit_run(cmd)
    return root / "run", originals


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def _table(text: str) -> dict[str, list[str]]:
    """Rows of a printed Markdown table by their first cell (the header under 'header')."""
    lines = [ln for ln in text.splitlines() if ln.startswith("| ")]
    return {"header" if i == 0 else _cells(ln)[0]: _cells(ln) for i, ln in enumerate(lines)}


def _read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


# ------------------------------------------------------------------------------------------ evaluate


def test_evaluate_values_summary_and_table(fitted, capsys):
    from inr_fast.store import load_jet, load_results

    run, originals = fitted
    assert main(["evaluate", str(run), "--quiet"]) == 0
    out = capsys.readouterr().out
    rows = _read_csv(run / "metrics.csv")
    assert [int(r["index"]) for r in rows] == [0, 1, 2]
    assert [int(r["label"]) for r in rows] == LABELS.tolist()

    # independent: per-jet render from the stored parameters, originals straight from the file
    recon = np.stack([load_jet(run, i).render() for i in range(N_JETS)])
    expected = compute_all(recon, originals, with_lpips=True)
    assert "lpips" in expected
    for name, values in expected.items():
        got = np.array([float(r[name]) for r in rows])
        np.testing.assert_allclose(got, values, rtol=1e-5, atol=1e-9, equal_nan=True, err_msg=name)

    stored = load_results(run)
    assert [int(r["steps"]) for r in rows] == stored.n_steps.tolist()
    assert all(int(r["steps"]) == STEPS for r in rows)  # no target reached in 20 steps
    # compact: L = 6 -> 2 + 4 * 6 = 26 features, 2 hidden layers of 32, 3 outputs, stored in
    # float16 except the 3 output biases (float32)
    n_params = 26 * 32 + 32 + 32 * 32 + 32 + 32 * 3 + 3
    assert all(int(r["bytes"]) == 2 * (n_params - 3) + 4 * 3 for r in rows)
    assert all(int(r["failed"]) == 0 for r in rows)

    summary = json.loads((run / "summary.json").read_text())
    assert summary["n_jets"] == N_JETS
    for name in ("psnr", "psnr_gain", "rel_l2", "ssim", "lpips", "jet_mass_rel_err", "sum_rel_err_hcal"):
        col = np.array([float(r[name]) for r in rows])
        st = summary["metrics"][name]
        assert st["mean"] == pytest.approx(np.mean(col), rel=1e-12)
        assert st["median"] == pytest.approx(np.median(col), rel=1e-12)
        assert st["std"] == pytest.approx(np.std(col), rel=1e-12, abs=1e-15)
        assert (st["min"], st["max"]) == (pytest.approx(col.min()), pytest.approx(col.max()))
        quark = summary["by_label"]["1"]
        assert quark["name"] == "quark" and quark["n_jets"] == 2
        assert quark["metrics"][name]["mean"] == pytest.approx(np.mean(col[LABELS == 1]), rel=1e-12)
        assert summary["by_label"]["0"]["metrics"][name]["median"] == pytest.approx(col[1], rel=1e-12)

    # the seed-style table, extended
    printed = _table(out)
    assert printed["header"][:7] == ["Sample", "Label", "PSNR (dB)", "SSIM", "LPIPS", "Gain (dB)", "rel L2"]
    assert printed["header"][7:12] == ["dE ECAL %", "dE HCAL %", "dpT Trk %", "dpT jet %", "dm jet %"]
    for r in rows:
        cells = printed[r["index"]]
        assert cells[1] == r["label"] and cells[2] == f"{float(r['psnr']):.2f}"
        assert cells[3] == f"{float(r['ssim']):.4f}" and cells[4] == f"{float(r['lpips']):.4f}"
        assert cells[11] == f"{100 * float(r['jet_mass_rel_err']):+.2f}"
    assert printed["median"][2] == f"{np.median([float(r['psnr']) for r in rows]):.2f}"
    assert printed["mean"][6] == f"{np.mean([float(r['rel_l2']) for r in rows]):.4f}"


def test_evaluate_refuses_overwrite_and_replaces_with_flag(fitted, capsys):
    run, _ = fitted
    if not (run / "metrics.csv").exists():
        assert main(["evaluate", str(run), "--quiet", "--no-lpips"]) == 0
    before = (run / "metrics.csv").read_text()
    assert main(["evaluate", str(run), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "metrics.csv" in err and "--overwrite" in err
    assert (run / "metrics.csv").read_text() == before
    assert main(["evaluate", str(run), "--quiet", "--no-lpips", "--overwrite"]) == 0
    rows = _read_csv(run / "metrics.csv")
    assert "lpips" not in rows[0]
    old = list(csv.DictReader(io.StringIO(before)))
    assert [r["psnr"] for r in rows] == [r["psnr"] for r in old]  # deterministic
    assert main(["evaluate", str(run), "--quiet", "--overwrite"]) == 0  # leave LPIPS in for the report


def test_batched_render_equals_store_render(fitted):
    from inr_fast.store import load_chunk, load_jet, read_config

    run, _ = fitted
    res = load_chunk(run, 0, read_config(run))
    batch = report.render_batch(res, np.arange(len(res)))
    for k, index in enumerate(res.indices):
        np.testing.assert_allclose(batch[k], load_jet(run, int(index)).render(), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(batch[k], res.reconstructions[k], rtol=1e-5, atol=1e-6)


def test_evaluate_errors(tmp_path, capsys):
    assert main(["evaluate", str(tmp_path), "--quiet"]) == 2
    assert "not an inr-fast run directory" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------ report


class _Tags(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))


@pytest.fixture(scope="module")
def reported(fitted, tmp_path_factory):
    """A copy of the fitted run WITHOUT metrics.csv, reported (so report evaluates first)."""
    run, originals = fitted
    copy = tmp_path_factory.mktemp("reported") / "run"
    shutil.copytree(run, copy, ignore=shutil.ignore_patterns("metrics.csv", "summary.json", "report.html"))
    assert main(["report", str(copy), "--jets", "2,1", "--no-lpips", "--resolution", "250", "--quiet"]) == 0
    return copy, originals


def test_report_self_contained_with_figures(reported):
    from PIL import Image

    run, _ = reported
    assert (run / "metrics.csv").is_file() and (run / "summary.json").is_file()  # evaluated first
    page = (run / "report.html").read_text()
    assert "http://" not in page and "https://" not in page
    parser = _Tags()
    parser.feed(page)
    assert not [t for t, _ in parser.tags if t in ("script", "link", "iframe", "object", "embed")]
    srcs = [a.get("src", "") for t, a in parser.tags if "src" in a]
    imgs = [a for t, a in parser.tags if t == "img"]
    assert len(imgs) == len(srcs) == 4
    for a in imgs:
        prefix = "data:image/png;base64,"
        assert a["src"].startswith(prefix)
        png = base64.b64decode(a["src"][len(prefix) :])
        assert png == (run / a["alt"]).read_bytes()  # the same PNG as written in RUN
        Image.open(io.BytesIO(png)).verify()
    assert sorted(a["alt"] for a in imgs) == sorted(report.FIGURE_NAMES)

    # compare.png: 2 jets x (original, reconstruction, residual) rows by 3 channel columns
    with Image.open(run / "compare.png") as im:
        w, h = im.size
    assert h / w == pytest.approx((6 * 3.8) / (3 * 4.4), rel=0.02)
    # the per-jet table carries the numbers of metrics.csv
    rows = _read_csv(run / "metrics.csv")
    for r in rows:
        assert f"<td>{float(r['psnr']):.2f}</td>" in page
    assert "compact" in page and "jet 2" in page


def test_report_refuses_overwrite_and_bad_jets(reported, capsys):
    run, _ = reported
    assert main(["report", str(run), "--quiet"]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main(["report", str(run), "--quiet", "--overwrite", "--jets", "7"]) == 2
    assert "not jets of this run" in capsys.readouterr().err
    assert main(["report", str(run), "--quiet", "--overwrite", "--jets", "a,b"]) == 2
    assert "--jets" in capsys.readouterr().err


CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)
# Marks, once the page has loaded, how many images there are and how many did not decode.
CHECKER = (
    "<script>window.addEventListener('load',function(){var i=Array.from(document.images);"
    "document.body.setAttribute('data-images',String(i.length));"
    "document.body.setAttribute('data-broken',String(i.filter(function(m){"
    "return !m.complete||m.naturalWidth===0;}).length));});</script>"
)


@pytest.mark.skipif(
    shutil.which("chromium") is None, reason="chromium is not installed (make test installs it)"
)
def test_report_in_headless_browser(reported, tmp_path):
    from PIL import Image

    run, _ = reported
    browser = shutil.which("chromium")
    base = [browser, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}"]
    shot = tmp_path / "shot.png"
    subprocess.run(
        [*base, f"--screenshot={shot}", "--window-size=1200,3000", (run / "report.html").as_uri()],
        check=True,
        capture_output=True,
        timeout=120,
    )
    with Image.open(shot) as im:
        pixels = np.asarray(im.convert("L"), dtype=np.float64)
    assert pixels.shape == (3000, 1200)
    assert pixels.std() > 20  # not blank: text, tables and figures
    assert (pixels < 128).mean() > 0.01

    # every image decoded: a copy of the page with a checker script, DOM dumped after load
    probe = tmp_path / "probe.html"
    probe.write_text((run / "report.html").read_text().replace("</body>", CHECKER + "</body>"))
    dom = subprocess.run(
        [*base, "--dump-dom", "--virtual-time-budget=5000", probe.as_uri()],
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    assert 'data-images="4"' in dom, dom[:500]
    assert 'data-broken="0"' in dom


# ------------------------------------------------------------------------------------------ pieces


def test_curve_band_hand_computed():
    h = np.array([[1.0, 2.0, np.nan, np.nan], [3.0, np.nan, np.nan, np.nan], [5.0, 4.0, 6.0, np.nan]])
    lo, med, hi = curve_band(h, (0.0, 0.5, 1.0))
    np.testing.assert_array_equal(med[:3], [3.0, 3.0, 6.0])
    np.testing.assert_array_equal(lo[:3], [1.0, 2.0, 6.0])
    np.testing.assert_array_equal(hi[:3], [5.0, 4.0, 6.0])
    assert np.isnan(med[3]) and np.isnan(lo[3])


def test_residual_norm_symmetric():
    res = np.array([[-2.0, 0.5], [8.0, 0.0]])
    ref = np.array([[0.0, 0.3], [1.0, 0.0]])
    norm = residual_norm(res, ref)
    assert (norm.vmin, norm.vmax) == (-8.0, 8.0)
    assert norm.linthresh == pytest.approx(0.3)
    assert float(norm(0.0)) == pytest.approx(0.5)
    assert residual_ticks(norm) == [-8.0, 0.0, 8.0]  # no whole decade above 10 x 0.3
    assert residual_ticks(residual_norm(res * 100, ref)) == [-100.0, -10.0, 0.0, 10.0, 100.0]


def test_summarise_format_and_choose_hand_computed():
    table = {
        "index": np.array([4, 7, 9, 12]),
        "label": np.array([1, 0, 0, 1]),
        "failed": np.array([0, 0, 0, 0]),
        "psnr": np.array([50.0, 60.0, np.inf, 40.0]),
        "rel_l2": np.array([0.2, 0.1, 0.05, 0.4]),
        "steps": np.array([10, 20, 30, 40]),
    }
    s = report.summarise(table)
    assert s["metrics"]["psnr"]["mean"] == 50.0 and s["metrics"]["psnr"]["n_nonfinite"] == 1
    assert s["metrics"]["rel_l2"]["median"] == pytest.approx(0.15)
    assert s["by_label"]["0"]["metrics"]["steps"]["mean"] == 25.0
    assert s["by_label"]["1"]["metrics"]["rel_l2"]["max"] == 0.4
    printed = _table(report.format_table(table, max_rows=2))
    assert printed["header"] == ["Sample", "Label", "PSNR (dB)", "rel L2", "Steps"]
    assert printed["4"] == ["4", "1", "50.00", "0.2000", "10"]
    assert "9" not in printed and "... 2 more" in printed
    assert printed["median"] == ["median", "", "50.00", "0.1500", "25"]
    assert printed["mean"] == ["mean", "", "50.00", "0.1875", "25"]
    assert report.choose_jets(table) == [4, 12]  # median and worst by rel_l2
    assert report.parse_jets("0, 3") == [0, 3]
    fig = plot_distributions({**table, "psnr_gain": table["psnr"] - 40, "jet_mass_rel_err": table["rel_l2"]})
    assert sum(ax.axison for ax in fig.axes) == 3  # psnr_gain, rel_l2, mass; the rest switched off
