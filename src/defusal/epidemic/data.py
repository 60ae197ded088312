"""Regional COVID-19 case counts: the JHU CSSE time series and the Dandekar training tracks.

A :class:`RegionSeries` contains cumulative confirmed, recovered and death counts of one region
over a window of days, with active = confirmed - recovered - deaths, the population and the
data problems found (see :mod:`defusal.epidemic.quirks`).
"""

from __future__ import annotations

import dataclasses
import difflib
import logging
import os
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd

from defusal.data import file_path
from defusal.epidemic import quirks
from defusal.epidemic.populations import ALIASES, Population, population
from defusal.errors import DataCorruptError, DefusalError

logger = logging.getLogger(__name__)

KINDS = ("confirmed", "deaths", "recovered")
ID_COLUMNS = ("Province/State", "Country/Region")
DEFAULT_MIN_CASES = 500

# Day 0 of each medRxiv 2020 track (Wuhan from the Chinese NHC; the others match JHU).
TRACK_START = {
    ("medrxiv", "Wuhan"): "2020-01-24",
    ("medrxiv", "Italy"): "2020-02-27",
    ("medrxiv", "South Korea"): "2020-02-22",
    ("medrxiv", "US"): "2020-03-08",
    ("patterns", "Italy"): "2020-02-27",
    ("patterns", "Korea"): "2020-02-23",
    ("patterns", "Spain"): "2020-03-07",
    ("patterns", "India"): "2020-03-24",
    ("patterns", "Brazil"): "2020-03-19",
    ("patterns", "Russia"): "2020-03-25",
    ("patterns", "Peru"): "2020-03-26",
    ("patterns", "UK"): "2020-03-13",
    ("patterns", "China"): "2020-01-23",
}


@dataclass
class RegionSeries:
    """Cumulative case counts of one region over a window of days.

    Attributes:
        region: display name, e.g. ``"Italy"`` or ``"Hubei"``.
        days: day offsets from the first day of the window, shape ``(n,)``; gaps are allowed.
        dates: calendar dates, shape ``(n,)``, or None when the source has none.
        confirmed, recovered, deaths: cumulative counts, shape ``(n,)``; recovered is NaN
            where it is known to be missing.
        population: head count and its source.
        source: the dataset the counts come from.
        problems: detected data problems that touch the window.
        first_case_date: first date with at least ``min_cases`` confirmed cases, or None.
    """

    region: str
    days: np.ndarray
    dates: pd.DatetimeIndex | None
    confirmed: np.ndarray
    recovered: np.ndarray
    deaths: np.ndarray
    population: Population
    source: str
    problems: list[quirks.DataProblem] = field(default_factory=list)
    first_case_date: pd.Timestamp | None = None
    min_cases: int = DEFAULT_MIN_CASES

    @property
    def active(self) -> np.ndarray:
        """Active cases, confirmed - recovered - deaths (NaN where recovered is missing)."""
        return self.confirmed - self.recovered - self.deaths

    @property
    def removed(self) -> np.ndarray:
        """Recovered plus deaths (NaN where recovered is missing)."""
        return self.recovered + self.deaths

    @property
    def recovered_reliable(self) -> bool:
        """Whether no recovered problem touches the window."""
        return not any(p.kind in quirks.RECOVERED_PROBLEMS for p in self.problems)

    @property
    def first_date(self) -> pd.Timestamp | None:
        """Calendar date of day 0, or None."""
        return None if self.dates is None else self.dates[0]

    def date_of(self, day: float) -> pd.Timestamp | None:
        """Return the calendar date of day offset ``day`` (rounded down), or None."""
        if self.dates is None:
            return None
        return self.dates[0] + pd.Timedelta(days=int(np.floor(day)))

    def offset_to_first_case(self) -> int:
        """Return the number of days from the ``min_cases``-th case to day 0 (may be negative)."""
        if self.first_case_date is None or self.dates is None:
            return 0
        return int((self.dates[0] - self.first_case_date).days)

    def until(self, last: str | pd.Timestamp | int) -> RegionSeries:
        """Return the window cut after date ``last`` (or day offset ``last`` when an int)."""
        if isinstance(last, int | np.integer):
            keep = self.days <= last
        else:
            if self.dates is None:
                raise DefusalError(
                    f"{self.region} has no calendar dates; give the last day as a day number"
                )
            keep = np.asarray(self.dates <= parse_date(last))
        if keep.sum() < 3:
            raise DefusalError(
                f"window of {self.region} up to {last} has {int(keep.sum())} days; "
                "choose a later end date (at least 3 days are needed)"
            )
        dates = None if self.dates is None else self.dates[keep]
        window = dataclasses.replace(
            self,
            days=self.days[keep],
            dates=dates,
            confirmed=self.confirmed[keep],
            recovered=self.recovered[keep],
            deaths=self.deaths[keep],
        )
        if dates is not None:
            window.problems = [p for p in self.problems if p.affects(dates[0], dates[-1])]
        return window


def parse_date(text: str | pd.Timestamp) -> pd.Timestamp:
    """Parse a date such as ``2020-03-24``, raising :class:`DefusalError` when invalid."""
    try:
        return pd.Timestamp(text).normalize()
    except (ValueError, TypeError):
        raise DefusalError(f"invalid date {text!r}; write it as YYYY-MM-DD") from None


# ---------------------------------------------------------------------------------------------
# JHU CSSE time series


@dataclass(frozen=True)
class JhuTables:
    """The three JHU CSSE wide tables, indexed by (province, country), one column per date."""

    confirmed: pd.DataFrame
    deaths: pd.DataFrame
    recovered: pd.DataFrame
    dates: pd.DatetimeIndex


def load_jhu(data_dir: str | os.PathLike | None = None) -> JhuTables:
    """Read the JHU CSSE global time series (confirmed, deaths, recovered).

    Raises:
        DataMissingError: a file is not in the data folder.
        DataCorruptError: a file lacks the ``Province/State``/``Country/Region`` columns, has
            dates that do not parse, non-numeric counts, or dates that differ between files.
    """
    paths = {
        kind: file_path("jhu_csse", f"time_series_covid19_{kind}_global.csv", data_dir)
        for kind in KINDS
    }
    stamps = tuple((str(p), p.stat().st_mtime_ns) for p in paths.values())
    return _load_jhu_cached(stamps)


@lru_cache(maxsize=4)
def _load_jhu_cached(stamps: tuple[tuple[str, int], ...]) -> JhuTables:
    tables = {kind: _read_wide(Path(path)) for kind, (path, _) in zip(KINDS, stamps, strict=True)}
    dates = tables["confirmed"].columns
    for kind in ("deaths", "recovered"):
        if not tables[kind].columns.equals(dates):
            raise DataCorruptError(
                f"{kind} file has different dates from the confirmed file; "
                "replace the JHU files with one consistent download"
            )
    return JhuTables(tables["confirmed"], tables["deaths"], tables["recovered"], dates)


def _read_wide(path: Path) -> pd.DataFrame:
    try:
        frame = pd.read_csv(path)
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise DataCorruptError(f"{path} is not a valid CSV ({reason}); replace the file") from None
    missing = [column for column in ID_COLUMNS if column not in frame.columns]
    if missing:
        raise DataCorruptError(
            f"{path} lacks column {missing[0]!r}; expected the JHU CSSE wide format"
        )
    date_columns = [c for c in frame.columns if c not in (*ID_COLUMNS, "Lat", "Long")]
    try:
        dates = pd.to_datetime(date_columns, format="%m/%d/%y")
    except ValueError:
        raise DataCorruptError(
            f"{path} has a column that is not a m/d/yy date; expected the JHU CSSE wide format"
        ) from None
    if len(dates) == 0:
        raise DataCorruptError(f"{path} has no date columns; replace the file")
    counts = frame[date_columns].apply(pd.to_numeric, errors="coerce")
    if counts.isna().to_numpy().any():
        row, column = np.argwhere(counts.isna().to_numpy())[0]
        raise DataCorruptError(
            f"{path} has a non-numeric count in row {row + 2}, column {date_columns[column]!r}; "
            "replace the file"
        )
    counts.columns = dates
    counts.index = pd.MultiIndex.from_arrays(
        [frame["Province/State"].astype(object).fillna(""), frame["Country/Region"]],
        names=["province", "country"],
    )
    return counts.astype(float)


def jhu_regions(tables: JhuTables) -> tuple[list[str], list[str]]:
    """Return the country names and the province names of the JHU confirmed table."""
    countries = sorted(set(tables.confirmed.index.get_level_values("country")))
    provinces = sorted(set(tables.confirmed.index.get_level_values("province")) - {""})
    return countries, provinces


def _resolve_rows(tables: JhuTables, region: str, province: str | None) -> list[tuple[str, str]]:
    index = tables.confirmed.index
    countries, provinces = jhu_regions(tables)
    country = ALIASES.get(region, region)
    if province is not None:
        key = (province, country)
        if key not in index:
            names = [p for p, c in index if c == country]
            close = difflib.get_close_matches(province, names, n=4)
            hint = f"; close matches: {', '.join(close)}" if close else ""
            raise DefusalError(f"province {province!r} of {region!r} not in JHU data{hint}")
        return [key]
    if country in countries:
        return [key for key in index if key[1] == country]
    if region in provinces:
        return [key for key in index if key[0] == region]
    close = difflib.get_close_matches(region, countries + provinces + list(ALIASES), n=4)
    hint = f"; close matches: {', '.join(close)}" if close else ""
    raise DefusalError(f"region {region!r} not found in the JHU CSSE data{hint}")


def jhu_region(
    region: str,
    province: str | None = None,
    *,
    min_cases: int = DEFAULT_MIN_CASES,
    start: str | None = None,
    until: str | None = None,
    data_dir: str | os.PathLike | None = None,
    faithful_population: bool = False,
    population_override: float | None = None,
) -> RegionSeries:
    """Select one region of the JHU CSSE time series, with its problems detected and handled.

    Provinces of a country are summed. Day 0 is the first day with at least ``min_cases``
    confirmed cases, unless ``start`` gives the date.

    Args:
        region: a ``Country/Region`` name (``Italy``, ``Korea, South``, ``US``), an alias
            (``South Korea``) or a ``Province/State`` name (``Hubei``).
        province: a ``Province/State`` of ``region`` to select alone.
        min_cases: confirmed cases that define day 0.
        start: first date of the window (YYYY-MM-DD), overriding ``min_cases``.
        until: last date of the window (YYYY-MM-DD); default the last date of the files.
        data_dir: data folder, as for :func:`defusal.data.file_path`.
        faithful_population: use the rounded populations of the medRxiv 2020 model.
        population_override: population to use instead of the table's.

    Returns:
        The selected :class:`RegionSeries`; its ``problems`` lists what touches the window.

    Raises:
        DefusalError: unknown region (with close matches), a region that never reaches
            ``min_cases``, an empty window, a start after the end, an end outside the
            data, or a population not larger than the largest confirmed count.
        DataMissingError, DataCorruptError: missing or malformed files.
    """
    if min_cases < 1:
        raise DefusalError(f"min_cases must be at least 1, got {min_cases}")
    tables = load_jhu(data_dir)
    rows = _resolve_rows(tables, region, province)
    name = province if province is not None else region
    confirmed, deaths, recovered, problems = _sum_rows(tables, rows)
    dates = tables.dates

    reached = np.flatnonzero(confirmed >= min_cases)
    first_case = dates[reached[0]] if len(reached) else None
    last = dates[-1] if until is None else parse_date(until)
    if last < dates[0] or last > dates[-1]:
        raise DefusalError(
            f"until {last.date()} is outside the JHU dates {dates[0].date()} to "
            f"{dates[-1].date()}; choose an end date within them"
        )
    if start is not None:
        first = parse_date(start)
        if first < dates[0] or first > dates[-1]:
            raise DefusalError(
                f"start {first.date()} is outside the JHU dates {dates[0].date()} to "
                f"{dates[-1].date()}"
            )
        if first > last:
            raise DefusalError(
                f"start {first.date()} is after until {last.date()}; choose a start date "
                "on or before the end date"
            )
    elif first_case is None:
        raise DefusalError(
            f"{name} never reaches {min_cases} confirmed cases (maximum "
            f"{confirmed.max():,.0f}); lower --min-cases"
        )
    else:
        first = first_case
    keep = np.asarray(dates >= first)
    if population_override is not None:
        people = Population(name, int(population_override), 2020, "given by the user")
    else:
        people = population(name, faithful=faithful_population)
    series = RegionSeries(
        region=name,
        days=np.arange(int(keep.sum())),
        dates=dates[keep],
        confirmed=confirmed[keep],
        recovered=recovered[keep],
        deaths=deaths[keep],
        population=people,
        source="jhu_csse",
        problems=problems,
        first_case_date=first_case,
        min_cases=min_cases,
    )
    window = series.until(last)
    check_population(window)
    for problem in window.problems:
        logger.info("%s: %s", name, problem.describe())
    return window


def _sum_rows(
    tables: JhuTables, rows: list[tuple[str, str]]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[quirks.DataProblem]]:
    """Sum rows after detecting and repairing each row's problems."""
    dates = tables.dates
    total = {kind: np.zeros(len(dates)) for kind in KINDS}
    problems: list[quirks.DataProblem] = []
    recovered_rows = set(tables.recovered.index)
    recovered_keys = [key for key in rows if key in recovered_rows]
    if not recovered_keys and len(rows) > 1:
        # Canada has provinces in the confirmed file but a single row in the recovered file.
        country = rows[0][1]
        recovered_keys = [key for key in tables.recovered.index if key[1] == country]
    for key in rows:
        label = _row_label(key)
        confirmed = tables.confirmed.loc[key].to_numpy(dtype=float)
        deaths = tables.deaths.loc[key].to_numpy(dtype=float)
        for kind, values in (("confirmed", confirmed), ("deaths", deaths)):
            problem = quirks.detect_decreases(label, kind, dates, values)
            if problem is not None:
                problems.append(problem)
            total[kind] += quirks.repair_decreases(values)
    confirmed_total = total["confirmed"]
    if not recovered_keys:
        label = _row_label(rows[0]) if len(rows) == 1 else rows[0][1]
        problems += quirks.detect_row_problems(label, dates, confirmed_total, None)
        total["recovered"][:] = np.nan
    for key in recovered_keys:
        label = _row_label(key)
        values = tables.recovered.loc[key].to_numpy(dtype=float)
        row_confirmed = (
            tables.confirmed.loc[key].to_numpy(dtype=float)
            if key in tables.confirmed.index
            else confirmed_total
        )
        found = quirks.detect_row_problems(label, dates, row_confirmed, values)
        problems += found
        values = values.copy()
        for problem in found:
            if problem.kind == "recovered_stopped":
                values[np.asarray(dates >= problem.start)] = np.nan
            elif problem.kind == "recovered_missing":
                values[:] = np.nan
        problem = quirks.detect_decreases(label, "recovered", dates, values)
        if problem is not None:
            problems.append(problem)
        total["recovered"] += quirks.repair_decreases(values)
    return total["confirmed"], total["deaths"], total["recovered"], problems


def _row_label(key: tuple[str, str]) -> str:
    province, country = key
    return f"{province}, {country}" if province else country


# ---------------------------------------------------------------------------------------------
# Training tracks of Dandekar and Barbastathis


def load_tracks(data_dir: str | os.PathLike | None = None) -> pd.DataFrame:
    """Read ``dandekar_training_tracks.csv`` (long format, one row per region and day).

    Raises:
        DataMissingError: the file is not in the data folder.
        DataCorruptError: a required column is missing or a count is not numeric.
    """
    path = file_path("dandekar_tracks", "dandekar_training_tracks.csv", data_dir)
    try:
        frame = pd.read_csv(path)
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as error:
        raise DataCorruptError(f"{path} is not a valid CSV ({error}); replace the file") from None
    required = (
        "paper_version",
        "region",
        "day_label",
        "index",
        "confirmed_cumulative",
        "recovered_cumulative",
        "deaths_cumulative",
    )
    for column in required:
        if column not in frame.columns:
            raise DataCorruptError(f"{path} lacks column {column!r}; replace the file")
    numeric = frame[list(required[2:])].apply(pd.to_numeric, errors="coerce")
    if numeric.isna().to_numpy().any():
        raise DataCorruptError(f"{path} has a non-numeric count; replace the file")
    frame[list(required[2:])] = numeric
    return frame


TRACK_REGION_ALIASES = {"Korea, South": "South Korea", "Hubei": "Wuhan"}


def tracks_region(
    region: str,
    version: str = "medrxiv",
    *,
    until: str | int | None = None,
    data_dir: str | os.PathLike | None = None,
    population_override: float | None = None,
) -> RegionSeries:
    """Select one region of the authors' training tracks.

    ``days`` follows the authors' ``day_label`` minus its first value, so Wuhan keeps its gap
    at day 36. Populations are the rounded values of the medRxiv 2020 model where it has one.

    Args:
        region: a region of the tracks file (``Wuhan``, ``Italy``, ``South Korea``, ``US``
            for ``medrxiv``; see the file for ``patterns``).
        version: ``medrxiv`` (V2 inputs) or ``patterns`` (V3 inputs).
        until: last date (YYYY-MM-DD) or last day offset of the window.
        data_dir: data folder.
        population_override: population to use instead of the table's.

    Raises:
        DefusalError: unknown version or region (with close matches).
    """
    frame = load_tracks(data_dir)
    versions = sorted(set(frame["paper_version"]))
    if version not in versions:
        raise DefusalError(f"unknown tracks version {version!r}; choose from {versions}")
    frame = frame[frame["paper_version"] == version]
    names = sorted(set(frame["region"]))
    name = region if region in names else TRACK_REGION_ALIASES.get(region, region)
    if name not in names:
        close = difflib.get_close_matches(region, names, n=4)
        hint = f"; close matches: {', '.join(close)}" if close else ""
        raise DefusalError(f"region {region!r} not in the {version} tracks{hint}")
    rows = frame[frame["region"] == name].sort_values("index")
    labels = rows["day_label"].to_numpy(dtype=int)
    days = labels - labels[0]
    start = TRACK_START.get((version, name))
    dates = None
    if start is not None:
        dates = pd.DatetimeIndex([pd.Timestamp(start) + pd.Timedelta(days=int(d)) for d in days])
    if population_override is not None:
        people = Population(name, int(population_override), 2020, "given by the user")
    else:
        people = population(ALIASES.get(name, name), faithful=True)
    confirmed = rows["confirmed_cumulative"].to_numpy(dtype=float)
    series = RegionSeries(
        region=name,
        days=days,
        dates=dates,
        confirmed=confirmed,
        recovered=rows["recovered_cumulative"].to_numpy(dtype=float),
        deaths=rows["deaths_cumulative"].to_numpy(dtype=float),
        population=people,
        source=f"dandekar_tracks ({version})",
        first_case_date=dates[0] if dates is not None else None,
    )
    found = quirks.detect_row_problems(name, _dates_or_days(series), confirmed, series.recovered)
    series.problems = [p for p in found if p.kind != "recovered_underreported"]
    if until is not None:
        series = series.until(until)
    check_population(series)
    return series


def check_population(series: RegionSeries) -> None:
    """Raise when the population N of ``series`` is not larger than its largest confirmed count.

    The model needs S = N - I - R - T > 0, so N at or below the confirmed count makes the loss
    infinite or undefined.

    Raises:
        DefusalError: N is not larger than the largest confirmed count of the window.
    """
    people = series.population.people
    largest = float(np.max(series.confirmed))
    if not people > largest:
        raise DefusalError(
            f"population {people:,} of {series.region} is not larger than its largest "
            f"confirmed count {largest:,.0f} in the window; give a larger --population"
        )


def _dates_or_days(series: RegionSeries) -> pd.DatetimeIndex:
    if series.dates is not None:
        return series.dates
    return pd.DatetimeIndex(pd.Timestamp("2020-01-01") + pd.to_timedelta(series.days, unit="D"))
