"""Tests for the Figure 1 files and the `defusal fig1` command."""

from __future__ import annotations

import math
from collections import Counter
from fractions import Fraction

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from defusal.cli import main
from defusal.errors import DefusalError
from defusal.figures.fig1 import make_figure1, sample_monotone_paths, summarize_figure1

EXPECTED_KEYS = {
    "grid_png",
    "grid_csv",
    "path_counts_png",
    "path_counts_csv",
    "pascal_png",
    "pascal_csv",
}


def exact_pascal_gradient(num_layers: int, dt: int, rho: float) -> float:
    """sum_{k<dt} C(L - 1 + k, k) * rho**(L + k) in exact rationals, rounded once."""
    gain = Fraction(rho)
    total = sum(math.comb(num_layers - 1 + k, k) * gain ** (num_layers + k) for k in range(dt))
    return float(total)


@pytest.fixture(scope="module")
def figure_paths(tmp_path_factory):
    return make_figure1(tmp_path_factory.mktemp("fig1"))


def test_make_figure1_keys(figure_paths):
    assert set(figure_paths) == EXPECTED_KEYS


@pytest.mark.parametrize("key", ["grid_png", "path_counts_png", "pascal_png"])
def test_make_figure1_png_opens(figure_paths, key):
    path = figure_paths[key]
    assert path.stat().st_size > 0
    with Image.open(path) as image:
        assert image.format == "PNG"
        assert image.width > 300
        assert image.height > 300
        image.verify()


def test_make_figure1_leaves_no_temporary_files(figure_paths):
    folder = figure_paths["grid_png"].parent
    assert sorted(p.name for p in folder.iterdir()) == sorted(p.name for p in figure_paths.values())


def test_path_count_csv_matches_exact_counts(figure_paths):
    counts = pd.read_csv(figure_paths["path_counts_csv"])
    assert list(counts.columns) == ["series", "time_steps", "depth", "log10_path_count"]
    expected = [
        math.log10(math.comb(int(t) + int(d), int(t)))
        for t, d in zip(counts["time_steps"], counts["depth"], strict=True)
    ]
    np.testing.assert_allclose(counts["log10_path_count"], expected, rtol=1e-11, atol=1e-11)


def test_path_count_csv_series_ranges(figure_paths):
    counts = pd.read_csv(figure_paths["path_counts_csv"])
    fixed_depth = counts[counts["series"] == "depth_5"]
    fixed_time = counts[counts["series"] == "time_steps_5"]
    both = counts[counts["series"] == "time_steps_100x_depth"]
    assert fixed_depth["time_steps"].max() == 10_000
    assert set(fixed_depth["depth"]) == {5}
    assert fixed_time["depth"].max() == 100
    assert set(fixed_time["time_steps"]) == {5}
    assert (both["time_steps"] == 100 * both["depth"]).all()
    assert both["log10_path_count"].max() == pytest.approx(242.2, abs=0.1)


def test_pascal_csv_matches_closed_form(figure_paths):
    gradients = pd.read_csv(figure_paths["pascal_csv"])
    assert sorted(gradients["rho"].unique()) == [0.5, 1.0]
    for row in gradients.itertuples():
        assert row.dt == 100 - row.t_prime
        expected = exact_pascal_gradient(10, row.dt, row.rho)
        assert row.closed_form_gradient == pytest.approx(expected, rel=1e-15)
        assert row.autograd_gradient == pytest.approx(expected, rel=1e-9)


def test_pascal_csv_relative_error_column(figure_paths):
    gradients = pd.read_csv(figure_paths["pascal_csv"])
    assert gradients["relative_error"].max() < 1e-9


def test_grid_csv_paths_are_monotone(figure_paths):
    paths = pd.read_csv(figure_paths["grid_csv"])
    assert paths["path"].nunique() == 3
    for _, nodes in paths.groupby("path"):
        steps = np.diff(nodes[["time_step", "layer"]].to_numpy(), axis=0)
        assert nodes.iloc[0][["time_step", "layer"]].tolist() == [2, 2]
        assert nodes.iloc[-1][["time_step", "layer"]].tolist() == [6, 4]
        assert np.all(steps.sum(axis=1) == 1)
        assert np.all(steps >= 0)


def test_summarize_figure1_headlines(figure_paths):
    summary = summarize_figure1(figure_paths)
    assert summary["log10_paths_depth5_T5000"] == pytest.approx(
        math.log10(math.comb(5005, 5)), rel=1e-12
    )
    assert summary["log10_paths_T100x_T10000"] == pytest.approx(
        math.log10(math.comb(10_100, 100)), rel=1e-12
    )
    assert summary["pascal_gradient_t0_rho1"] == pytest.approx(math.comb(109, 10), rel=1e-9)
    assert summary["pascal_gradient_t0_rho0.5"] == pytest.approx(1.0, abs=1e-6)
    assert summary["pascal_max_relative_error"] < 1e-9


def test_make_figure1_rejects_file_as_folder(tmp_path):
    blocker = tmp_path / "taken"
    blocker.write_text("not a folder")
    with pytest.raises(DefusalError, match="taken"):
        make_figure1(blocker)


def test_sample_monotone_paths_uniform():
    # dt = 2, dl = 1 has C(3, 1) = 3 paths, each drawn with probability 1/3.
    paths = sample_monotone_paths(2, 1, 3000, seed=5)
    frequencies = Counter(tuple(map(tuple, nodes)) for nodes in paths)
    assert len(frequencies) == 3
    for count in frequencies.values():
        assert abs(count - 1000) < 120  # about 4.6 standard deviations of a binomial count


def test_sample_monotone_paths_endpoints():
    for nodes in sample_monotone_paths(4, 3, 5, seed=0):
        assert nodes.shape == (8, 2)
        assert nodes[0].tolist() == [0, 0]
        assert nodes[-1].tolist() == [4, 3]


@pytest.mark.parametrize("dt, dl, count", [(-1, 2, 1), (2, 2, 0), (2, 2, 1.5)])
def test_sample_monotone_paths_rejects_invalid(dt, dl, count):
    with pytest.raises(DefusalError):
        sample_monotone_paths(dt, dl, count, seed=0)


def test_cli_fig1_writes_files(tmp_path, capsys):
    out = tmp_path / "fig1"
    assert main(["fig1", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert (out / "fig1c_pascal_rnn.png").is_file()
    assert str(out / "fig1b_path_counts.csv") in printed
    assert "242.2" in printed
    assert "4.263e+13" in printed


def test_cli_fig1_file_as_folder(tmp_path, capsys):
    blocker = tmp_path / "taken.txt"
    blocker.write_text("not a folder")
    assert main(["fig1", "--out", str(blocker)]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1
    assert error.startswith("defusal: error:")
    assert str(blocker) in error
