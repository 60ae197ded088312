"""Smoke runs of every benchmark at its tiny size: tables fill, numbers are finite, no timing check.

Checks of correctness compare against values computed here independently: a closed form for
the LRU loop, eigenvalues of a Jacobian formed by torch.func for the exact radius.
"""

from __future__ import annotations

import math

import pytest
import torch
from benchmarks import (
    bench_epidemic,
    bench_lru_scan,
    bench_pretrain,
    bench_radius,
    bench_throughput,
)
from benchmarks.__main__ import main
from benchmarks.harness import PeakMemory, Table, measure


def numbers(table: Table) -> list[float]:
    """Return every numeric cell of a table."""
    return [value for row in table.rows for value in row if isinstance(value, int | float)]


def column(table: Table, name: str) -> list[object]:
    """Return the cells of one column."""
    index = table.columns.index(name)
    return [row[index] for row in table.rows]


def check_filled(tables: list[Table]) -> None:
    assert tables
    for table in tables:
        assert table.rows, table.title
        assert all(len(row) == len(table.columns) for row in table.rows), table.title
        values = numbers(table)
        assert values, table.title
        assert all(math.isfinite(value) for value in values), table.title
        assert table.to_markdown().startswith("### ")


def test_measure_counts_repeats():
    calls = []
    timing = measure(lambda: calls.append(1), repeats=3, warmup=2)
    assert len(calls) == 5
    assert timing.repeats == 3
    assert timing.minimum <= timing.median <= timing.maximum


def test_peak_memory_sees_allocation():
    with PeakMemory() as memory:
        block = torch.ones(64 * 2**20 // 4)  # 64 MiB, touched by the fill
        del block
    assert memory.peak >= 32 * 2**20


def test_table_markdown_layout():
    table = Table("title", ["a", "b"], rows=[[1, 0.5]], notes=["a note"])
    lines = table.to_markdown().splitlines()
    assert lines[0] == "### title"
    assert lines[2] == "| a | b |"
    assert lines[4] == "| 1 | 0.500 |"
    assert lines[-1] == "- a note"


def test_radius_tiny():
    tables = bench_radius.run("tiny")
    check_filled(tables)
    for error in column(tables[0], "max rel. error"):
        assert error < 0.05


def test_radius_map_matches_eigenvalues():
    # The exact path must equal eigenvalues of the per-sample blocks of the whole-batch Jacobian
    # formed independently by torch.func.jacrev.
    _, local_map = bench_radius.time_map(6, 3, 4)
    whole = torch.func.jacrev(local_map.function)(local_map.point)
    blocks = torch.stack([whole[b, :, b, :] for b in range(3)])
    expected = torch.linalg.eigvals(blocks).abs().amax(dim=-1)
    torch.testing.assert_close(bench_radius.exact_radius(local_map), expected)


def test_pretrain_tiny():
    tables = bench_pretrain.run("tiny")
    check_filled(tables)
    assert len(tables) == 2


def test_throughput_tiny():
    tables = bench_throughput.run("tiny")
    check_filled(tables)
    assert column(tables[0], "network") == ["lstm", "gru"]


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_throughput_networks_agree(kind):
    settings = bench_throughput.SETTINGS["tiny"]
    x = torch.randn(2, settings["time_steps"], settings["input"])
    outputs = [network(x)[0] for network in bench_throughput.networks(kind, settings).values()]
    torch.testing.assert_close(outputs[1], outputs[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(outputs[2], outputs[0], atol=1e-5, rtol=1e-5)


def test_lru_scan_tiny():
    scan, stack = bench_lru_scan.run("tiny")
    check_filled([scan, stack])
    for difference in column(scan, "max |scan - loop|"):
        assert difference < 1e-5
    for difference in column(stack, "max |parallel - step-by-step|"):
        assert difference < 1e-5


def test_lru_loop_closed_form():
    # x_t = sum_{s <= t} lam^(t - s) bu_s, computed directly for a short sequence.
    lam = torch.tensor([0.5 + 0.5j, -0.9 + 0.0j], dtype=torch.complex128)
    bu = torch.randn(1, 4, 2, dtype=torch.complex128)
    expected = torch.stack(
        [sum(lam ** (t - s) * bu[:, s] for s in range(t + 1)) for t in range(4)], dim=1
    )
    torch.testing.assert_close(bench_lru_scan.step_by_step(lam, bu), expected)


def test_epidemic_tiny():
    tables = bench_epidemic.run("tiny")
    check_filled(tables)
    assert len(tables[0].rows) == len(bench_epidemic.REGIONS) + 2


def test_main_writes_markdown(tmp_path, capsys):
    out = tmp_path / "BENCHMARKS.md"
    assert main(["--size", "tiny", "--only", "bench_lru_scan", "--out", str(out)]) == 0
    text = out.read_text()
    assert text.startswith("# Benchmarks")
    assert "torch threads" in text
    assert "### LRU recurrence" in text


def test_main_rejects_unknown(capsys):
    assert main(["--only", "bench_nothing"]) == 2
