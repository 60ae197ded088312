"""Population of every region in the JHU CSSE global time series.

Country values are estimates of the mid-2020 population from the UN World Population Prospects
2019 (medium variant), rounded to the nearest thousand and written from memory of that table,
so each may be off by about 1%. Rows that are not countries (cruise ships, Olympic Games,
Antarctica) carry the approximate number of people involved, with the source named per row.
The ``faithful`` table contains the rounded values that Dandekar and Barbastathis used in their
medRxiv 2020 model (Wuhan 11M, Italy 60M, South Korea 52M, US 327M).
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass

from defusal.errors import DefusalError

WPP_2019 = "UN World Population Prospects 2019, mid-2020 estimate (medium variant)"
PAPER_2020 = "Dandekar and Barbastathis, medRxiv 10.1101/2020.04.03.20052084 (2020)"


@dataclass(frozen=True)
class Population:
    """Population of one region: head count, reference year and named source."""

    region: str
    people: int
    year: int
    source: str


# Thousands of people, UN WPP 2019 estimates for mid-2020.
_WPP_THOUSANDS: dict[str, int] = {
    "Afghanistan": 38_928, "Albania": 2_878, "Algeria": 43_851, "Andorra": 77,
    "Angola": 32_866, "Antigua and Barbuda": 98, "Argentina": 45_196, "Armenia": 2_963,
    "Australia": 25_500, "Austria": 9_006, "Azerbaijan": 10_139, "Bahamas": 393,
    "Bahrain": 1_702, "Bangladesh": 164_689, "Barbados": 287, "Belarus": 9_449,
    "Belgium": 11_590, "Belize": 398, "Benin": 12_123, "Bhutan": 772, "Bolivia": 11_673,
    "Bosnia and Herzegovina": 3_281, "Botswana": 2_352, "Brazil": 212_559, "Brunei": 437,
    "Bulgaria": 6_948, "Burkina Faso": 20_903, "Burma": 54_410, "Burundi": 11_891,
    "Cabo Verde": 556, "Cambodia": 16_719, "Cameroon": 26_546, "Canada": 37_742,
    "Central African Republic": 4_830, "Chad": 16_426, "Chile": 19_116, "China": 1_439_324,
    "Colombia": 50_883, "Comoros": 870, "Congo (Brazzaville)": 5_518,
    "Congo (Kinshasa)": 89_561, "Costa Rica": 5_094, "Cote d'Ivoire": 26_378,
    "Croatia": 4_105, "Cuba": 11_327, "Cyprus": 1_207, "Czechia": 10_709, "Denmark": 5_792,
    "Djibouti": 988, "Dominica": 72, "Dominican Republic": 10_848, "Ecuador": 17_643,
    "Egypt": 102_334, "El Salvador": 6_486, "Equatorial Guinea": 1_403, "Eritrea": 3_546,
    "Estonia": 1_327, "Eswatini": 1_160, "Ethiopia": 114_964, "Fiji": 896,
    "Finland": 5_541, "France": 65_274, "Gabon": 2_226, "Gambia": 2_417, "Georgia": 3_989,
    "Germany": 83_784, "Ghana": 31_073, "Greece": 10_423, "Grenada": 113,
    "Guatemala": 17_916, "Guinea": 13_133, "Guinea-Bissau": 1_968, "Guyana": 787,
    "Haiti": 11_403, "Holy See": 1, "Honduras": 9_905, "Hungary": 9_660, "Iceland": 341,
    "India": 1_380_004, "Indonesia": 273_524, "Iran": 83_993, "Iraq": 40_223,
    "Ireland": 4_938, "Israel": 8_656, "Italy": 60_462, "Jamaica": 2_961, "Japan": 126_476,
    "Jordan": 10_203, "Kazakhstan": 18_777, "Kenya": 53_771, "Kiribati": 119,
    "Korea, North": 25_779, "Korea, South": 51_269, "Kosovo": 1_873, "Kuwait": 4_271,
    "Kyrgyzstan": 6_524, "Laos": 7_276, "Latvia": 1_886, "Lebanon": 6_825,
    "Lesotho": 2_142, "Liberia": 5_058, "Libya": 6_871, "Liechtenstein": 38,
    "Lithuania": 2_722, "Luxembourg": 626, "Madagascar": 27_691, "Malawi": 19_130,
    "Malaysia": 32_366, "Maldives": 541, "Mali": 20_251, "Malta": 442,
    "Marshall Islands": 59, "Mauritania": 4_650, "Mauritius": 1_272, "Mexico": 128_933,
    "Micronesia": 115, "Moldova": 4_034, "Monaco": 39, "Mongolia": 3_278,
    "Montenegro": 628, "Morocco": 36_911, "Mozambique": 31_255, "Namibia": 2_541,
    "Nepal": 29_137, "Netherlands": 17_135, "New Zealand": 4_822, "Nicaragua": 6_625,
    "Niger": 24_207, "Nigeria": 206_140, "North Macedonia": 2_083, "Norway": 5_421,
    "Oman": 5_107, "Pakistan": 220_892, "Palau": 18, "Panama": 4_315,
    "Papua New Guinea": 8_947, "Paraguay": 7_133, "Peru": 32_972, "Philippines": 109_581,
    "Poland": 37_847, "Portugal": 10_197, "Qatar": 2_881, "Romania": 19_238,
    "Russia": 145_934, "Rwanda": 12_952, "Saint Kitts and Nevis": 53, "Saint Lucia": 184,
    "Saint Vincent and the Grenadines": 111, "Samoa": 198, "San Marino": 34,
    "Sao Tome and Principe": 219, "Saudi Arabia": 34_814, "Senegal": 16_744,
    "Serbia": 8_737, "Seychelles": 98, "Sierra Leone": 7_977, "Singapore": 5_850,
    "Slovakia": 5_460, "Slovenia": 2_079, "Solomon Islands": 687, "Somalia": 15_893,
    "South Africa": 59_309, "South Sudan": 11_194, "Spain": 46_755, "Sri Lanka": 21_413,
    "Sudan": 43_849, "Suriname": 587, "Sweden": 10_099, "Switzerland": 8_655,
    "Syria": 17_501, "Taiwan*": 23_817, "Tajikistan": 9_538, "Tanzania": 59_734,
    "Thailand": 69_800, "Timor-Leste": 1_318, "Togo": 8_279, "Tonga": 106,
    "Trinidad and Tobago": 1_399, "Tunisia": 11_819, "Turkey": 84_339, "US": 331_003,
    "Uganda": 45_741, "Ukraine": 43_734, "United Arab Emirates": 9_890,
    "United Kingdom": 67_886, "Uruguay": 3_474, "Uzbekistan": 33_469, "Vanuatu": 307,
    "Venezuela": 28_436, "Vietnam": 97_339, "West Bank and Gaza": 5_101, "Yemen": 29_826,
    "Zambia": 18_384, "Zimbabwe": 14_863,
}  # fmt: skip

# Rows of the JHU file that are not countries: approximate head counts with their sources.
_OTHER_ROWS: tuple[Population, ...] = (
    Population("Antarctica", 1_000, 2020, "approximate winter staff of research stations"),
    Population("Diamond Princess", 3_711, 2020, "passengers and crew aboard, Feb 2020 reports"),
    Population("MS Zaandam", 1_829, 2020, "passengers and crew aboard, Mar 2020 reports"),
    Population("Summer Olympics 2020", 11_000, 2021, "approximate number of athletes, Tokyo 2020"),
    Population("Winter Olympics 2022", 3_000, 2022, "approximate number of athletes, Beijing 2022"),
)

# Provinces and cities that analyses of the early epidemic use on their own.
_SUBREGIONS: tuple[Population, ...] = (
    Population("Hubei", 59_000_000, 2019, "Hubei statistical yearbook, rounded (59 million)"),
    Population("Wuhan", 11_000_000, 2020, PAPER_2020),
)

# The rounded values of the medRxiv 2020 model. Its code used 51 million for South Korea.
_FAITHFUL: tuple[Population, ...] = (
    Population("Wuhan", 11_000_000, 2020, PAPER_2020),
    Population("Italy", 60_000_000, 2020, PAPER_2020),
    Population("Korea, South", 52_000_000, 2020, PAPER_2020),
    Population("US", 327_000_000, 2020, PAPER_2020),
)


def _build_table() -> dict[str, Population]:
    table = {
        name: Population(name, thousands * 1000, 2020, WPP_2019)
        for name, thousands in _WPP_THOUSANDS.items()
    }
    for entry in _OTHER_ROWS + _SUBREGIONS:
        table[entry.region] = entry
    return table


POPULATIONS: dict[str, Population] = _build_table()
FAITHFUL_POPULATIONS: dict[str, Population] = {entry.region: entry for entry in _FAITHFUL}

# Names that the tracks file and common usage give to JHU regions.
ALIASES: dict[str, str] = {
    "South Korea": "Korea, South",
    "Korea": "Korea, South",
    "UK": "United Kingdom",
    "USA": "US",
    "United States": "US",
    "Taiwan": "Taiwan*",
    "Myanmar": "Burma",
}


def population(region: str, faithful: bool = False) -> Population:
    """Look up the population of a JHU region (country, or a province in the table).

    Args:
        region: a ``Country/Region`` name of the JHU file, ``Hubei``, ``Wuhan`` or an alias
            such as ``South Korea``.
        faithful: use the rounded values of the medRxiv 2020 model where it has one.

    Returns:
        The :class:`Population` entry, which names its source.

    Raises:
        DefusalError: the region is not in the table; the message lists close matches.
    """
    name = ALIASES.get(region, region)
    if faithful and name in FAITHFUL_POPULATIONS:
        return FAITHFUL_POPULATIONS[name]
    if name in POPULATIONS:
        return POPULATIONS[name]
    close = difflib.get_close_matches(region, list(POPULATIONS) + list(ALIASES), n=4)
    hint = f"; close matches: {', '.join(close)}" if close else ""
    raise DefusalError(
        f"no population known for region {region!r}{hint}; pass the population explicitly"
    )
