"""The `defusal lsc` command line: measure, pretrain with a checkpoint, one-line errors."""

from __future__ import annotations

import pytest
import torch

from defusal.cli import main
from defusal.lsc import load_checkpoint
from defusal.nets.build import build_network

SMALL = [
    "--net",
    "gru",
    "--width",
    "6",
    "--depth",
    "2",
    "--batch",
    "2",
    "--time-steps",
    "5",
    "--time-samples",
    "2",
    "--input-size",
    "4",
]


def test_measure_gaussian_table(capsys):
    assert main(["lsc", "measure", *SMALL]) == 0
    output = capsys.readouterr().out
    assert "| layer | time radius | depth radius" in output
    assert "| mean |" in output


def test_pretrain_saves_exact_model(tmp_path, capsys):
    path = tmp_path / "gru.ckpt"
    status = main(
        [
            "lsc",
            "pretrain",
            *SMALL,
            "--steps",
            "2",
            "--target",
            "0.5",
            "--no-progress",
            "--out",
            str(path),
        ]
    )
    assert status == 0
    assert f"checkpoint: {path}" in capsys.readouterr().out
    loaded = load_checkpoint(path)
    reference = build_network("gru", 4, 6, 2, 10, seed=0)
    x = torch.randn(2, 3, 4)
    assert loaded(x)[0].shape == reference(x)[0].shape
    assert not torch.equal(loaded.cells[0].weight_hh, reference.cells[0].weight_hh)


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["--net", "transformer"], "unknown network"),
        (["--width", "0"], "--width must be positive"),
        (["--data", "imagenet"], "unknown data source"),
        (["--estimator", "qr"], "unknown radius estimator"),
    ],
)
def test_measure_bad_arguments(arguments, message, capsys):
    assert main(["lsc", "measure", *SMALL, *arguments]) == 2
    error = capsys.readouterr().err.strip()
    assert message in error
    assert "\n" not in error


@pytest.mark.parametrize("target", ["0", "-1", "nan", "big"])
def test_pretrain_bad_target(target, capsys, tmp_path):
    status = main(
        ["lsc", "pretrain", *SMALL, "--target", target, "--out", str(tmp_path / "x.ckpt")]
    )
    error = capsys.readouterr().err.strip()
    assert status == 2
    assert "target" in error
    assert "\n" not in error


def test_measure_input_size_mismatch(capsys, real_data_dir):
    status = main(
        [
            "lsc",
            "measure",
            "--net",
            "gru",
            "--width",
            "4",
            "--depth",
            "1",
            "--data",
            "fsdd",
            "--input-size",
            "5",
            "--data-dir",
            str(real_data_dir),
        ]
    )
    error = capsys.readouterr().err.strip()
    assert status == 2
    assert "does not match fsdd" in error
    assert "\n" not in error


def test_pretrain_rejects_folder_as_out(tmp_path, capsys):
    status = main(["lsc", "pretrain", "--width", "4", "--depth", "1", "--out", str(tmp_path)])

    assert status == 2
    assert "is a folder" in capsys.readouterr().err
