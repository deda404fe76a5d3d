"""inr-fast report: a self-contained page with figures, refusals, a headless-browser check."""

from __future__ import annotations

import base64
import io
import json
import shutil
import subprocess
from html.parser import HTMLParser

import numpy as np
import pytest

from inr_fast.cli import main
from inr_fast.report.html import FIGURE_NAMES
from tests.helpers import read_csv


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
    assert len(imgs) == len(srcs) == 5  # the four figures and the observables (too few jets for ROC)
    for a in imgs:
        prefix = "data:image/png;base64,"
        assert a["src"].startswith(prefix)
        png = base64.b64decode(a["src"][len(prefix) :])
        assert png == (run / a["alt"]).read_bytes()  # the same PNG as written in RUN
        Image.open(io.BytesIO(png)).verify()
    assert sorted(a["alt"] for a in imgs) == sorted((*FIGURE_NAMES, "observables.png"))

    # compare.png: 2 jets x (original, reconstruction, residual) rows by 3 channel columns
    with Image.open(run / "compare.png") as im:
        w, h = im.size
    assert h / w == pytest.approx((6 * 3.8) / (3 * 4.4), rel=0.02)
    # the per-jet table carries the numbers of metrics.csv
    rows = read_csv(run / "metrics.csv")
    for r in rows:
        assert f"<td>{float(r['psnr']):.2f}</td>" in page
    assert "compact" in page and "jet 2" in page
    # the physics section carries physics.json's numbers
    section = json.loads((run / "physics.json").read_text())
    assert "Physics fidelity" in page and "taggers not run" in page
    mass = next(r for r in section["fidelity"] if r["observable"] == "calo_cone_mass" and r["class"] == "all")
    assert f"<td>calo_cone_mass</td><td>{100 * mass['bias']:+.3g}</td>" in page


def test_report_refuses_overwrite_and_bad_jets(reported, capsys):
    run, _ = reported
    assert main(["report", str(run), "--quiet"]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main(["report", str(run), "--quiet", "--overwrite", "--jets", "7"]) == 2
    assert "not jets of this run" in capsys.readouterr().err
    assert main(["report", str(run), "--quiet", "--overwrite", "--jets", "a,b"]) == 2
    assert "--jets" in capsys.readouterr().err


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
    assert 'data-images="5"' in dom, dom[:500]
    assert 'data-broken="0"' in dom
