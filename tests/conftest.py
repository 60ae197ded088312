"""Shared test set-up: the real data folder and deterministic, single-process torch."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

if "DEFUSAL_DATA" not in os.environ and SHARED_DATA.is_dir():
    os.environ["DEFUSAL_DATA"] = str(SHARED_DATA)

torch.set_num_threads(1)


@pytest.fixture
def real_data_dir() -> Path:
    """The folder with the real datasets; the test fails, not skips, when it is missing."""
    folder = Path(os.environ.get("DEFUSAL_DATA", SHARED_DATA))
    if not folder.is_dir():
        pytest.fail(f"real data folder {folder} not found; set DEFUSAL_DATA")
    return folder
