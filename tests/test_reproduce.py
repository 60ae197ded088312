"""The reproduce job and its command line, with the training grid run on a tiny task."""

from __future__ import annotations

import re

import pytest

from defusal.cli import main
from defusal.errors import DefusalError
from defusal.experiments import catalog
from defusal.experiments.reproduce import parse_jobs, reproduce
from test_experiments import toy_runner


def test_parse_jobs_default_quick():
    assert parse_jobs(None, "quick") == list(catalog.QUICK_DEFAULT_JOBS)


def test_parse_jobs_keeps_fixed_order():
    assert parse_jobs("epidemic,fig1,rnn", "full") == ["fig1", "rnn", "epidemic"]


def test_parse_jobs_unknown_name():
    with pytest.raises(DefusalError, match="unknown job 'cnn'"):
        parse_jobs("rnn,cnn", "quick")


def test_parse_jobs_unknown_size():
    with pytest.raises(DefusalError, match="unknown size"):
        parse_jobs(None, "medium")


def test_reproduce_writes_report(tmp_path):
    runner = toy_runner(tmp_path)
    result = reproduce("quick", tmp_path, only="rnn", runner=runner, progress=False)
    text = result.report.read_text()
    quick_runs, _ = catalog.RNN.expand("quick")
    assert result.report == tmp_path / "report.md"
    for condition in ("default", "lsc-1", "lsc-0.5"):
        assert f"| {condition} |" in result.summary
    assert text.count("](plots/") == 3
    assert len(list((tmp_path / "rnn").iterdir())) == len(quick_runs)


def test_reproduce_rejects_file_as_out(tmp_path):
    out = tmp_path / "file"
    out.write_text("x")
    with pytest.raises(DefusalError, match="is a file"):
        reproduce("quick", out, only="rnn", runner=toy_runner(tmp_path), progress=False)


def test_cli_list(capsys):
    assert main(["reproduce", "--list"]) == 0
    output = capsys.readouterr().out
    for name in catalog.JOBS:
        assert re.search(rf"^{name}\s", output, flags=re.MULTILINE), name


def one_line_error(capsys) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1
    return lines[0]


def test_cli_unknown_job(capsys):
    assert main(["reproduce", "--quick", "--only", "fig1,nope"]) == 2
    assert "unknown job 'nope'" in one_line_error(capsys)


def test_cli_bad_seeds(capsys):
    assert main(["reproduce", "--quick", "--seeds", "0"]) == 2
    assert "--seeds" in one_line_error(capsys)


def test_cli_missing_size(capsys):
    assert main(["reproduce"]) == 2
    assert "--quick or --full" in one_line_error(capsys)


def test_cli_missing_dataset(tmp_path, capsys):
    empty = tmp_path / "no-data"
    empty.mkdir()
    status = main(
        [
            "reproduce",
            "--quick",
            "--only",
            "rnn",
            "--out",
            str(tmp_path / "out"),
            "--data-dir",
            str(empty),
        ]
    )
    assert status == 2
    assert "missing" in one_line_error(capsys)
