"""Data selection, populations and the detection of JHU data problems."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

from defusal.cli import main
from defusal.cli.epidemic import split_regions
from defusal.epidemic import quirks
from defusal.epidemic.data import jhu_region, load_jhu, tracks_region
from defusal.epidemic.fit import FitConfig, FitProblem
from defusal.epidemic.populations import POPULATIONS, population
from defusal.epidemic.quirks import repair_decreases
from defusal.errors import DataCorruptError, DefusalError

DATES = pd.date_range("2020-03-01", periods=8)
COLUMNS = [f"{d.month}/{d.day}/{d.year % 100}" for d in DATES]


def write_jhu(folder, confirmed, deaths, recovered):
    """Write the three JHU files from {(province, country): counts} dicts."""
    covid = folder / "covid"
    covid.mkdir(parents=True, exist_ok=True)
    for kind, rows in (("confirmed", confirmed), ("deaths", deaths), ("recovered", recovered)):
        frame = pd.DataFrame(
            [
                [province, country, 0.0, 0.0, *values]
                for (province, country), values in rows.items()
            ],
            columns=["Province/State", "Country/Region", "Lat", "Long", *COLUMNS],
        )
        frame.to_csv(covid / f"time_series_covid19_{kind}_global.csv", index=False)
    return folder


@pytest.fixture
def small_data(tmp_path):
    confirmed = {
        ("", "Italy"): [400, 600, 900, 1300, 1800, 2400, 3000, 3500],
        ("", "France"): [500, 700, 650, 900, 1200, 1500, 1900, 2300],
        ("", "Malta"): [1, 2, 3, 5, 8, 10, 12, 15],
        ("Ontario", "Canada"): [300, 400, 500, 600, 700, 800, 900, 1000],
        ("Quebec", "Canada"): [200, 300, 400, 500, 600, 700, 800, 900],
    }
    deaths = {key: [0, 1, 2, 3, 4, 5, 6, 7] for key in confirmed}
    recovered = {
        ("", "Italy"): [5, 10, 20, 40, 0, 0, 0, 0],
        ("", "France"): [5, 10, 15, 20, 30, 40, 50, 60],
        ("", "Malta"): [0, 0, 0, 1, 1, 2, 2, 3],
        ("", "Canada"): [1, 2, 4, 8, 16, 32, 64, 128],
    }
    return write_jhu(tmp_path, confirmed, deaths, recovered)


def kinds(series):
    return [problem.kind for problem in series.problems]


def test_start_on_500th_case(small_data):
    series = jhu_region("Italy", data_dir=small_data)
    assert series.dates[0] == pd.Timestamp("2020-03-02")
    assert series.confirmed[0] == 600


def test_active_cases(small_data):
    series = jhu_region("France", data_dir=small_data)
    expected = series.confirmed - series.recovered - series.deaths
    assert np.array_equal(series.active, expected)


def test_recovered_stop_detected(small_data):
    series = jhu_region("Italy", data_dir=small_data)
    stops = [p for p in series.problems if p.kind == "recovered_stopped"]
    assert len(stops) == 1
    assert stops[0].start == pd.Timestamp("2020-03-05")


def test_recovered_stop_becomes_missing(small_data):
    series = jhu_region("Italy", data_dir=small_data)
    assert np.all(np.isnan(series.recovered[3:]))
    assert series.recovered[0] == 10


def test_recovered_stop_triggers_two_stage(small_data):
    series = jhu_region("Italy", data_dir=small_data)
    assert FitProblem(series).uses_two_stage(FitConfig())


def test_window_before_stop_is_clean(small_data):
    series = jhu_region("Italy", data_dir=small_data, until="2020-03-04")
    assert "recovered_stopped" not in kinds(series)
    assert not FitProblem(series).uses_two_stage(FitConfig())


def test_negative_daily_change_reported(small_data):
    series = jhu_region("France", data_dir=small_data)
    assert "negative_daily_change" in kinds(series)


def test_negative_daily_change_repaired(small_data):
    series = jhu_region("France", data_dir=small_data)
    assert series.confirmed[:3].tolist() == [500, 650, 650]


def test_repair_is_backward_running_minimum():
    repaired = repair_decreases(np.array([1.0, 5.0, 3.0, 6.0, np.nan, 4.0, 7.0]))
    assert repaired[:4].tolist() == [1.0, 3.0, 3.0, 4.0]
    assert np.isnan(repaired[4])
    assert repaired[5:].tolist() == [4.0, 7.0]


def test_provinces_summed(small_data):
    series = jhu_region("Canada", data_dir=small_data, min_cases=1)
    assert series.confirmed[0] == 300 + 200


def test_country_level_recovered_used_for_provinces(small_data):
    series = jhu_region("Canada", data_dir=small_data, min_cases=1)
    assert series.recovered[0] == 1


def test_province_without_recovered_row(small_data):
    series = jhu_region(
        "Canada", "Ontario", data_dir=small_data, min_cases=1, population_override=14.7e6
    )
    assert "recovered_missing" in kinds(series)
    assert np.all(np.isnan(series.recovered))


def test_region_under_500_cases(small_data):
    with pytest.raises(DefusalError, match="never reaches 500"):
        jhu_region("Malta", data_dir=small_data)


def test_lower_threshold_accepts_region(small_data):
    series = jhu_region("Malta", data_dir=small_data, min_cases=5)
    assert series.confirmed[0] == 5


def test_missing_region_lists_close_matches(small_data):
    with pytest.raises(DefusalError, match="close matches: Italy"):
        jhu_region("Itly", data_dir=small_data)


def test_malformed_file(tmp_path):
    covid = tmp_path / "covid"
    covid.mkdir()
    for kind in ("confirmed", "deaths", "recovered"):
        (covid / f"time_series_covid19_{kind}_global.csv").write_text(
            "Province/State,Country/Region,Lat,Long,not a date\n,Italy,0,0,1\n"
        )
    with pytest.raises(DataCorruptError) as error:
        load_jhu(tmp_path)
    assert "\n" not in str(error.value)


def test_non_numeric_count(tmp_path):
    covid = tmp_path / "covid"
    covid.mkdir()
    for kind in ("confirmed", "deaths", "recovered"):
        (covid / f"time_series_covid19_{kind}_global.csv").write_text(
            "Province/State,Country/Region,Lat,Long,3/1/20\n,Italy,0,0,lots\n"
        )
    with pytest.raises(DataCorruptError, match="non-numeric"):
        load_jhu(tmp_path)


def test_missing_files(tmp_path):
    from defusal.errors import DataMissingError

    with pytest.raises(DataMissingError):
        load_jhu(tmp_path)


def test_cli_unknown_region_one_line(small_data, capsys):
    status = main(
        ["epidemic", "fit", "--region", "Itly", "--until", "2020-03-08",
         "--data-dir", str(small_data)]
    )  # fmt: skip
    error = capsys.readouterr().err
    assert status == 2
    assert error.count("\n") == 1
    assert "Itly" in error


def test_cli_fit_and_forecast(small_data, tmp_path, capsys):
    out = tmp_path / "out"
    options = ["--data-dir", str(small_data), "--out", str(out), "--seeds", "1", "--steps",
               "3", "--lbfgs-steps", "0", "--no-progress", "--horizon", "10"]  # fmt: skip
    status = main(["epidemic", "fit", "--region", "France", "--until", "2020-03-08", *options])
    assert status == 0
    assert (out / "epidemic_france.pt").is_file()
    assert (out / "epidemic_france.png").is_file()
    status = main(["epidemic", "forecast", "--region", "France", "--scenario", "relax:3", *options])
    printed = capsys.readouterr().out
    assert status == 0
    assert "France relax:3" in printed


def test_split_regions_keeps_korea_whole():
    assert split_regions("Hubei,Italy,Korea, South,US") == ["Hubei", "Italy", "Korea, South", "US"]


def test_population_for_every_jhu_country(real_data_dir):
    tables = load_jhu(real_data_dir)
    countries = set(tables.confirmed.index.get_level_values("country"))
    assert countries <= set(POPULATIONS)


def test_population_names_source():
    entry = population("Italy")
    assert "World Population Prospects" in entry.source


def test_population_faithful_values():
    assert population("Italy", faithful=True).people == 60_000_000
    assert population("US", faithful=True).people == 327_000_000
    assert population("Wuhan").people == 11_000_000
    assert population("Hubei").people == 59_000_000


def test_population_unknown_close_matches():
    with pytest.raises(DefusalError, match="close matches"):
        population("Germny")


def test_tracks_italy_facts(real_data_dir):
    series = tracks_region("Italy", data_dir=real_data_dir)
    assert len(series.days) == 27
    assert series.confirmed[0] == 650
    assert series.confirmed[-1] == 69_176


@pytest.mark.parametrize(("region", "rows"), [("Italy", 27), ("US", 24)])
def test_tracks_shorter_than_recovery_lag(real_data_dir, region, rows):
    # Both tracks are shorter than the 28-day lag of the under-reporting check.
    series = tracks_region(region, "medrxiv", data_dir=real_data_dir)
    assert len(series.days) == rows
    assert "recovered_underreported" not in kinds(series)


def test_recovered_share_short_series():
    dates = pd.date_range("2020-03-01", periods=20)
    confirmed = np.linspace(1000, 50_000, 20)
    found = quirks.detect_row_problems("Short", dates, confirmed, confirmed * 0.01)
    assert found == []


def test_tracks_wuhan_facts(real_data_dir):
    series = tracks_region("Wuhan", data_dir=real_data_dir)
    assert len(series.days) == 45
    assert series.days.tolist() == [d for d in range(46) if d != 36]
    assert series.confirmed[0] == 495


def test_tracks_us_differs_from_time_series(real_data_dir):
    tracks = tracks_region("US", data_dir=real_data_dir)
    jhu = jhu_region("US", data_dir=real_data_dir, start="2020-03-08", until="2020-03-10")
    assert tracks.confirmed[2] == 959
    assert jhu.confirmed[2] == 782


def test_jhu_italy_first_days(real_data_dir):
    series = jhu_region("Italy", data_dir=real_data_dir, until="2020-03-01")
    assert series.dates[0] == pd.Timestamp("2020-02-27")
    assert series.confirmed.tolist() == [655, 888, 1128, 1694]


def test_jhu_us_recovered_stop(real_data_dir):
    series = jhu_region("US", data_dir=real_data_dir)
    stops = [p.start for p in series.problems if p.kind == "recovered_stopped"]
    assert stops == [pd.Timestamp("2020-12-14")]


def test_jhu_us_recovered_underreported(real_data_dir):
    series = jhu_region("US", data_dir=real_data_dir, until="2020-04-01")
    assert "recovered_underreported" in kinds(series)


def test_jhu_uk_recovered_stop(real_data_dir):
    series = jhu_region("United Kingdom", data_dir=real_data_dir)
    stops = [
        p.start
        for p in series.problems
        if p.kind == "recovered_stopped" and p.row == "United Kingdom"
    ]
    assert stops == [pd.Timestamp("2020-04-13")]


def test_jhu_korea_alias(real_data_dir):
    series = jhu_region("South Korea", data_dir=real_data_dir, until="2020-02-25")
    assert series.dates[0] == pd.Timestamp("2020-02-23")


def cli_error(capsys, *arguments):
    """Run the CLI and return (status, standard error)."""
    status = main(["epidemic", *arguments])
    return status, capsys.readouterr().err


def test_cli_population_below_confirmed(small_data, capsys):
    status, error = cli_error(
        capsys, "fit", "--region", "France", "--until", "2020-03-08", "--population", "100",
        "--data-dir", str(small_data),
    )  # fmt: skip
    assert status == 2
    assert error.count("\n") == 1
    assert "population 100 " in error
    assert "2,300" in error


def test_cli_until_after_data(small_data, capsys):
    status, error = cli_error(
        capsys, "fit", "--region", "France", "--until", "2030-01-01",
        "--data-dir", str(small_data),
    )  # fmt: skip
    assert status == 2
    assert error.count("\n") == 1
    assert "2030-01-01" in error
    assert "2020-03-08" in error


def test_cli_start_after_until(small_data, capsys):
    status, error = cli_error(
        capsys, "fit", "--region", "France", "--start", "2020-03-06", "--until", "2020-03-02",
        "--data-dir", str(small_data),
    )  # fmt: skip
    assert status == 2
    assert error.count("\n") == 1
    assert "start 2020-03-06 is after until 2020-03-02" in error


def test_cli_fit_prints_window_and_rejects_other_region(small_data, tmp_path, capsys):
    out = tmp_path / "out"
    options = ["--data-dir", str(small_data), "--out", str(out), "--seeds", "1", "--steps",
               "3", "--lbfgs-steps", "0", "--no-progress", "--horizon", "10"]  # fmt: skip
    status = main(["epidemic", "fit", "--region", "France", "--until", "2020-03-07", *options])
    printed = capsys.readouterr().out
    assert status == 0
    assert "France: fitting 2020-03-01 to 2020-03-07 (7 days)" in printed
    saved = str(out / "epidemic_france.pt")
    status, error = cli_error(capsys, "forecast", "--region", "Italy", "--fit", saved, *options)
    assert status == 2
    assert error.count("\n") == 1
    assert "France" in error
    assert "Italy" in error


def test_cli_forecast_states_explosion_rule(small_data, tmp_path, capsys):
    out = tmp_path / "out"
    options = ["--data-dir", str(small_data), "--out", str(out), "--seeds", "1", "--steps",
               "3", "--lbfgs-steps", "0", "--no-progress", "--horizon", "10"]  # fmt: skip
    status = main(
        ["epidemic", "forecast", "--region", "France", "--until", "2020-03-08",
         "--scenario", "continue", *options]
    )  # fmt: skip
    printed = capsys.readouterr().out
    assert status == 0
    assert "median infected grew" in printed


def test_empty_province_column_no_warning(tmp_path):
    confirmed = {("", "Italy"): [400, 600, 900, 1300, 1800, 2400, 3000, 3500]}
    deaths = {("", "Italy"): [0, 1, 2, 3, 4, 5, 6, 7]}
    folder = write_jhu(tmp_path, confirmed, deaths, deaths)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tables = load_jhu(folder)
    assert tables.confirmed.index.get_level_values("province")[0] == ""
