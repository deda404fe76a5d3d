"""Jet figures and ``inr-fast show``: the panels hold the channel values, the PNG is real and atomic."""

from __future__ import annotations

import h5py
import matplotlib.image as mpimg
import numpy as np
import pytest
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure

from inr_fast.cli import main
from inr_fast.errors import ConfigError, OutputExistsError
from inr_fast.layout import CHANNELS, PITCH
from inr_fast.report.plots import jet_extent, jet_log_norm, plot_jet, plot_mean_jet, save_figure


def _images(n: int = 6, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = (rng.pareto(2.0, (n, 125, 125, 3)) * (rng.random((n, 125, 125, 3)) < 0.03)).astype(np.float32)
    x[:, 62, 62] += 50.0  # a hard core
    x[0, 0, 0, 0] = -0.1  # calorimeter noise
    return x


@pytest.fixture(scope="module")
def jet_file(tmp_path_factory):
    images = _images()
    path = tmp_path_factory.mktemp("plots") / "jets.h5"
    with h5py.File(path, "w") as f:
        f["X_jets"] = images
        f["y"] = np.array([1, 0, 1, 0, 1, 0], np.float32)
        f["m0"] = np.full(6, 12.5, np.float32)
        f["pt"] = np.full(6, 150.0, np.float32)
    return path, images


def _image_axes(fig):
    return [ax for ax in fig.axes if ax.images]


def test_plot_jet_panels_hold_the_channels():
    image = _images(1)[0]
    fig = plot_jet(image, title="a jet")
    assert isinstance(fig, Figure)
    axes = _image_axes(fig)
    assert len(axes) == 3
    assert [ax.get_title() for ax in axes] == list(CHANNELS)
    for c, ax in enumerate(axes):
        im = ax.images[0]
        data = im.get_array()
        np.testing.assert_array_equal(np.ma.getdata(data), image[..., c])
        np.testing.assert_array_equal(np.ma.getmaskarray(data), image[..., c] <= 0)  # zeros: background
        assert isinstance(im.norm, LogNorm)
        assert im.norm.vmax == pytest.approx(image[..., c].max())
        positive = image[..., c][image[..., c] > 0]
        assert im.norm.vmin == pytest.approx(max(positive.min(), positive.max() / 1e4))
        np.testing.assert_allclose(im.get_extent(), [-125 / 2 * PITCH, 125 / 2 * PITCH] * 2)
        assert "eta" in ax.get_ylabel() and "phi" in ax.get_xlabel()
    labels = [ax.get_ylabel() for ax in fig.axes if not ax.images]  # the colourbars
    assert len(labels) == 3 and all("GeV" in lab for lab in labels)
    assert fig._suptitle.get_text() == "a jet"


def test_log_norm_hand_values():
    a = np.zeros((4, 4))
    a[0, 0], a[1, 1] = 2.0, 1000.0
    n = jet_log_norm(a)
    assert (n.vmin, n.vmax) == (2.0, 1000.0)
    a[2, 2] = 1e-5  # far below vmax / 1e4: clipped to the lowest colour
    assert jet_log_norm(a).vmin == pytest.approx(0.1)
    shared = jet_log_norm(a, np.full((2, 2), 5000.0))
    assert shared.vmax == 5000.0
    empty = jet_log_norm(np.zeros((3, 3)))
    assert 0 < empty.vmin < empty.vmax
    assert jet_extent((125, 125), 1.0) == (-62.5, 62.5, -62.5, 62.5)


def test_empty_jet_is_drawn():
    fig = plot_jet(np.zeros((125, 125, 3), np.float32))
    assert len(_image_axes(fig)) == 3
    assert all(t.get_text() == "no deposits" for ax in _image_axes(fig) for t in ax.texts)


def test_plot_mean_jet_is_the_mean(jet_file):
    path, images = jet_file
    want = images[[1, 3, 4]].astype(np.float64).mean(axis=0)
    for source in (path, images):
        fig = plot_mean_jet(source, [1, 3, 4])
        for c, ax in enumerate(_image_axes(fig)):
            np.testing.assert_allclose(np.ma.getdata(ax.images[0].get_array()), want[..., c], rtol=1e-6)
        assert "mean of 3 jets" in fig._suptitle.get_text()


def _check_png(path):
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    pixels = mpimg.imread(path)
    assert pixels.ndim == 3 and pixels.shape[0] > 200 and pixels.shape[1] > 600
    assert pixels[..., :3].std() > 0.05  # not blank
    return pixels


def test_show_writes_a_png_and_refuses_to_overwrite(jet_file, tmp_path, capsys):
    path, _ = jet_file
    out = tmp_path / "figs" / "jet.png"  # the folder is created
    assert main(["show", str(path), "--index", "-2", "--out", str(out)]) == 0
    _check_png(out)
    before = out.read_bytes()
    assert main(["show", str(path), "--index", "1", "--out", str(out)]) == 2
    assert "already exists; pass --overwrite" in capsys.readouterr().err
    assert out.read_bytes() == before
    assert main(["show", str(path), "--index", "1", "--out", str(out), "--overwrite"]) == 0
    assert out.read_bytes() != before
    assert sorted(p.name for p in out.parent.iterdir()) == ["jet.png"]  # no temporary files left


def test_show_mean(jet_file, tmp_path):
    path, _ = jet_file
    out = tmp_path / "mean.png"
    assert main(["show", str(path), "--mean", "--out", str(out)]) == 0
    all_jets = _check_png(out)
    out2 = tmp_path / "mean2.png"
    assert (
        main(["show", str(path), "--mean", "--indices", "0,2:4", "--chunk-size", "2", "--out", str(out2)])
        == 0
    )
    assert not np.array_equal(_check_png(out2), all_jets)


def test_show_channels_first(jet_file, tmp_path):
    path, images = jet_file
    cf = tmp_path / "cf.h5"
    with h5py.File(cf, "w") as f:
        f["X_jets"] = images.transpose(0, 3, 1, 2)
        f["y"], f["m0"], f["pt"] = np.zeros(6), np.zeros(6), np.zeros(6)
    out, ref = tmp_path / "cf.png", tmp_path / "ref.png"
    assert main(["show", str(cf), "--index", "2", "--channels-first", "--title", "t", "--out", str(out)]) == 0
    assert main(["show", str(path), "--index", "2", "--title", "t", "--out", str(ref)]) == 0
    np.testing.assert_array_equal(mpimg.imread(out), mpimg.imread(ref))


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--index", "6"], "jet index 6 is out of range: the file has 6 jets"),
        (["--index", "1", "--mean"], "--index and --mean exclude each other"),
        (["--indices", "1:3"], "--indices selects the jets averaged by --mean"),
        (["--mean", "--indices", "x"], "cannot parse jet selection 'x'"),
    ],
)
def test_show_bad_arguments(jet_file, tmp_path, capsys, extra, message):
    path, _ = jet_file
    out = tmp_path / "x.png"
    assert main(["show", str(path), "--out", str(out), *extra]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not out.exists()


def test_show_unwritable_output_folder(jet_file, tmp_path, capsys):
    path, _ = jet_file
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    assert main(["show", str(path), "--out", str(blocker / "jet.png")]) == 2
    err = capsys.readouterr().err
    assert f"{blocker / 'jet.png'}: cannot write into folder {blocker}" in err


def test_save_figure_errors(tmp_path):
    fig = plot_jet(_images(1)[0])
    with pytest.raises(ConfigError, match="unknown figure format '.h5'"):
        save_figure(fig, tmp_path / "x.h5")
    with pytest.raises(ConfigError, match="is a directory"):
        save_figure(fig, tmp_path)
    (tmp_path / "x.png").write_bytes(b"old")
    with pytest.raises(OutputExistsError, match="already exists"):
        save_figure(fig, tmp_path / "x.png")
    assert (tmp_path / "x.png").read_bytes() == b"old"
    save_figure(fig, tmp_path / "x.png", overwrite=True)
    _check_png(tmp_path / "x.png")
    save_figure(fig, tmp_path / "x.pdf")
    assert (tmp_path / "x.pdf").read_bytes()[:5] == b"%PDF-"
