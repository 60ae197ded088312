"""Detection and repair of the known problems of the JHU CSSE time series.

Three problems are detected on each row of the files before rows are summed:

- ``recovered_stopped``: the recovered series has positive values and then stays 0 to the end
  (JHU stopped collecting recovered counts: US from 2020-12-14, the United Kingdom row from
  2020-04-13, every country from 2021-08-05). The zeros are treated as missing.
- ``recovered_missing``: the recovered file has no row for the region, or the row is 0 on every
  day although cases were confirmed.
- ``recovered_underreported``: recovered counts stay far below what the confirmed counts four
  weeks earlier imply (the US in 2020).
- ``negative_daily_change``: a cumulative series decreases from one day to the next because of
  a later correction. The series is repaired with a backward running minimum, which moves the
  correction back to the days that were over-counted.

Any recovered problem inside a fitting window makes the fit use two stages: everything first,
then the network and beta on infected (or active) cases alone with gamma and delta frozen.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd

logger = logging.getLogger(__name__)

RECOVERED_PROBLEMS = ("recovered_stopped", "recovered_missing", "recovered_underreported")

# Recovered counts are called under-reported when, at the median over the days with at least
# 1,000 cases confirmed four weeks earlier, the recovered count is less than this share of
# those cases. Most countries report 0.8-1.0; the US in 2020 reports about 0.4.
UNDERREPORTED_SHARE = 0.6
RECOVERY_LAG_DAYS = 28


@dataclass(frozen=True)
class DataProblem:
    """One detected problem of a time series and how it is handled.

    ``start`` and ``end`` bound the dates the problem affects (inclusive).
    """

    kind: str
    series: str
    row: str
    start: pd.Timestamp
    end: pd.Timestamp
    message: str
    handling: str

    def affects(self, first: pd.Timestamp, last: pd.Timestamp) -> bool:
        """Return whether the problem touches the dates ``first`` to ``last`` (inclusive)."""
        return self.start <= last and self.end >= first

    def describe(self) -> str:
        """Return the problem and its handling as one line."""
        return f"{self.message}; {self.handling}"


def find_recovered_stop(values: np.ndarray) -> int | None:
    """Return the index from which a cumulative series with positive values stays 0, or None.

    Args:
        values: cumulative counts, shape ``(days,)``.
    """
    positive = np.flatnonzero(values > 0)
    if len(positive) == 0 or positive[-1] == len(values) - 1:
        return None
    return int(positive[-1]) + 1


def find_decreases(values: np.ndarray) -> np.ndarray:
    """Return the indices ``k`` with ``values[k] < values[k - 1]``, NaN entries ignored."""
    steps = np.diff(values)
    with np.errstate(invalid="ignore"):
        return np.flatnonzero(steps < 0) + 1


def repair_decreases(values: np.ndarray) -> np.ndarray:
    """Make a cumulative series non-decreasing with a backward running minimum (NaN kept)."""
    repaired = values.astype(float).copy()
    finite = np.isfinite(repaired)
    if finite.any():
        kept = repaired[finite]
        repaired[finite] = np.minimum.accumulate(kept[::-1])[::-1]
    return repaired


def detect_row_problems(
    row: str,
    dates: pd.DatetimeIndex,
    confirmed: np.ndarray,
    recovered: np.ndarray | None,
) -> list[DataProblem]:
    """Detect recovered problems of one JHU row.

    Args:
        row: label of the row for messages, e.g. ``"United Kingdom"``.
        dates: the dates of the columns, shape ``(days,)``.
        confirmed: cumulative confirmed cases, shape ``(days,)``.
        recovered: cumulative recovered, shape ``(days,)``, or None when the file has no row.

    Returns:
        The detected problems, possibly empty.
    """
    problems: list[DataProblem] = []
    first, last = dates[0], dates[-1]
    if recovered is None or (not np.any(recovered > 0) and np.any(confirmed > 0)):
        reason = "has no row" if recovered is None else "is 0 on every day"
        problems.append(
            DataProblem(
                "recovered_missing",
                "recovered",
                row,
                first,
                last,
                f"recovered for {row} {reason}",
                "recovered treated as missing; two-stage fit on infected cases",
            )
        )
        return problems
    stop = find_recovered_stop(recovered)
    if stop is not None:
        problems.append(
            DataProblem(
                "recovered_stopped",
                "recovered",
                row,
                dates[stop],
                last,
                f"recovered for {row} is 0 from {dates[stop].date()} on",
                "zeros treated as missing; two-stage fit when the window reaches them",
            )
        )
    share = _recovered_share(confirmed, recovered, stop)
    if share is not None and share < UNDERREPORTED_SHARE:
        end = dates[stop - 1] if stop is not None else last
        problems.append(
            DataProblem(
                "recovered_underreported",
                "recovered",
                row,
                first,
                end,
                f"recovered for {row} is under-reported (median {share:.2f} of the cases "
                f"confirmed {RECOVERY_LAG_DAYS} days earlier)",
                "two-stage fit on infected cases",
            )
        )
    return problems


def _recovered_share(
    confirmed: np.ndarray, recovered: np.ndarray, stop: int | None
) -> float | None:
    # Series shorter than the lag (the 24-27 day medRxiv tracks of Italy and the US) have no
    # day with a lagged partner; slicing them anyway gives arrays of different lengths.
    end = min(stop if stop is not None else len(recovered), len(confirmed))
    if end <= RECOVERY_LAG_DAYS:
        return None
    lagged = confirmed[: end - RECOVERY_LAG_DAYS]
    later = recovered[RECOVERY_LAG_DAYS:end]
    usable = lagged >= 1000
    if usable.sum() < 14:
        return None
    return float(np.median(later[usable] / lagged[usable]))


def detect_decreases(
    row: str, series: str, dates: pd.DatetimeIndex, values: np.ndarray
) -> DataProblem | None:
    """Report the day-to-day decreases of one cumulative series, or None if there are none."""
    where = find_decreases(values)
    if len(where) == 0:
        return None
    drops = values[where - 1] - values[where]
    largest = int(np.argmax(drops))
    return DataProblem(
        "negative_daily_change",
        series,
        row,
        dates[where[0]],
        dates[where[-1]],
        f"{series} for {row} decreases on {len(where)} days (largest {drops[largest]:,.0f} on "
        f"{dates[where[largest]].date()})",
        "repaired with a backward running minimum",
    )
