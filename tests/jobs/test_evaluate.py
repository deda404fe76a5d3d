"""inr-fast evaluate: metric values against the single functions, summary, table, refusals."""

from __future__ import annotations

import csv
import io
import json

import numpy as np
import pytest

from inr_fast import store
from inr_fast.cli import main
from inr_fast.commands.report import parse_jets
from inr_fast.jobs.evaluate import format_table, summarise
from inr_fast.jobs.render import render_batch
from inr_fast.metrics.levels import compute_all
from inr_fast.report.figures import plot_distributions
from inr_fast.report.html import choose_jets
from tests.helpers import LABELS, N_JETS, STEPS, read_csv


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def _table(text: str) -> dict[str, list[str]]:
    """Rows of a printed Markdown table by their first cell (the header under 'header')."""
    lines = [ln for ln in text.splitlines() if ln.startswith("| ")]
    return {"header" if i == 0 else _cells(ln)[0]: _cells(ln) for i, ln in enumerate(lines)}


def test_evaluate_values_summary_and_table(fitted, capsys):
    from inr_fast.store import load_jet, load_results

    run, originals = fitted
    assert main(["evaluate", str(run), "--quiet"]) == 0
    out = capsys.readouterr().out
    rows = read_csv(run / "metrics.csv")
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
    param_bytes = 2 * (n_params - 3) + 4 * 3
    sizes = [store.chunk_path(run, c).stat().st_size for c in (0, 1)]  # chunks of 2 and 1 jets
    assert [int(r["bytes"]) for r in rows] == [round(sizes[0] / 2)] * 2 + [sizes[1]]
    assert all(param_bytes < int(r["bytes"]) < param_bytes + 2500 for r in rows)
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
        assert cells[1] == {"1": "quark", "0": "gluon"}[r["label"]] and cells[2] == f"{float(r['psnr']):.2f}"
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
    rows = read_csv(run / "metrics.csv")
    assert "lpips" not in rows[0]
    old = list(csv.DictReader(io.StringIO(before)))
    assert [r["psnr"] for r in rows] == [r["psnr"] for r in old]  # deterministic
    assert main(["evaluate", str(run), "--quiet", "--overwrite"]) == 0  # leave LPIPS in for the report


def test_batched_render_equals_store_render(fitted):
    from inr_fast.store import load_chunk, load_jet, read_config

    run, _ = fitted
    res = load_chunk(run, 0, read_config(run))
    batch = render_batch(res, np.arange(len(res)))
    for k, index in enumerate(res.indices):
        np.testing.assert_allclose(batch[k], load_jet(run, int(index)).render(), rtol=1e-5, atol=1e-6)


def test_evaluate_errors(tmp_path, capsys):
    assert main(["evaluate", str(tmp_path), "--quiet"]) == 2
    assert "not an inr-fast run directory" in capsys.readouterr().err


def test_summarise_format_and_choose_hand_computed():
    table = {
        "index": np.array([4, 7, 9, 12]),
        "label": np.array([1, 0, 0, 1]),
        "failed": np.array([0, 0, 0, 0]),
        "psnr": np.array([50.0, 60.0, np.inf, 40.0]),
        "rel_l2": np.array([0.2, 0.1, 0.05, 0.4]),
        "steps": np.array([10, 20, 30, 40]),
    }
    s = summarise(table)
    assert s["metrics"]["psnr"]["mean"] == 50.0 and s["metrics"]["psnr"]["n_nonfinite"] == 1
    assert s["metrics"]["rel_l2"]["median"] == pytest.approx(0.15)
    assert s["by_label"]["0"]["metrics"]["steps"]["mean"] == 25.0
    assert s["by_label"]["1"]["metrics"]["rel_l2"]["max"] == 0.4
    printed = _table(format_table(table, max_rows=2))
    assert printed["header"] == ["Sample", "Label", "PSNR (dB)", "rel L2", "Steps"]
    assert printed["4"] == ["4", "quark", "50.00", "0.2000", "10"]
    assert "9" not in printed and "... 2 more" in printed
    assert printed["median"] == ["median", "", "50.00", "0.1500", "25"]
    assert printed["mean"] == ["mean", "", "50.00", "0.1875", "25"]
    assert choose_jets(table) == [4, 12]  # median and worst by rel_l2
    assert parse_jets("0, 3") == [0, 3]
    fig = plot_distributions({**table, "psnr_gain": table["psnr"] - 40, "jet_mass_rel_err": table["rel_l2"]})
    assert sum(ax.axison for ax in fig.axes) == 3  # psnr_gain, rel_l2, mass; the rest switched off
