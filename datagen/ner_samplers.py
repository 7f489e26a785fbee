"""The entity samplers of the quickstart NER generator: `(rng, kind) -> surface string` per label, and the
`GENERATORS` table from a template slot's letter ({P} person, {O} organization, {L} location, {D} date,
{R} product) to its label and sampler.
"""

from __future__ import annotations

import random

from datagen.ner_lexicons import (
    AGENCY_FORMS, AIRLINES, CITIES, COUNTRIES, FIRST_NAMES, INTL_ORGS, LANDMARKS, LAST_NAMES, MONTHS, MONTH_ABBR,
    NEWS_ORGS, ORG_INDUSTRY, ORG_LEGAL, ORG_PREFIX, PRODUCT_BRANDS, PRODUCT_LINES, REAL_COMPANIES, REAL_PRODUCTS,
    REAL_TEAMS, REAL_UNIVS, REGIONS, SCIENCE_ORGS, TEAM_NICKNAMES, UNIV_FORMS, WEEKDAYS,
)


def ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


# ---------------------------------------------------------------------------
# Entity samplers: (rng, kind) -> surface string
# ---------------------------------------------------------------------------

def gen_person(rng: random.Random, kind: str) -> str:
    first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
    if kind == "first":
        return first
    if kind == "last":
        return last
    if kind == "":  # mostly full names, sometimes with a middle initial
        r = rng.random()
        if r < 0.08:
            return f"{first} {rng.choice('ABCDEFGHJKLMNPRSTW')}. {last}"
        if r < 0.12:
            return f"{first} {rng.choice(LAST_NAMES)}-{last}"
    return f"{first} {last}"


def gen_location(rng: random.Random, kind: str) -> str:
    if kind == "city":
        return rng.choice(CITIES)
    if kind == "country":
        return rng.choice(COUNTRIES)
    if kind == "region":
        return rng.choice(REGIONS)
    r = rng.random()
    if r < 0.5:
        return rng.choice(CITIES)
    if r < 0.8:
        return rng.choice(COUNTRIES)
    if r < 0.95:
        return rng.choice(REGIONS)
    return rng.choice(LANDMARKS)


def _strip_the(name: str) -> str:
    return name[4:] if name.startswith("the ") else name


def gen_org(rng: random.Random, kind: str) -> str:
    if kind == "":
        kind = rng.choices(["company", "intl", "univ", "team", "news", "agency"], [62, 8, 9, 7, 7, 7])[0]
    if kind == "company":
        r = rng.random()
        base = f"{rng.choice(ORG_PREFIX)} {rng.choice(ORG_INDUSTRY)}"
        if r < 0.3:
            return rng.choice(REAL_COMPANIES)
        if r < 0.55:
            return f"{base} {rng.choice(ORG_LEGAL)}"
        if r < 0.62:
            return f"{rng.choice(LAST_NAMES)} & {rng.choice(LAST_NAMES)}"
        if r < 0.7:
            return f"{rng.choice(LAST_NAMES)} {rng.choice(ORG_INDUSTRY)}"
        return base
    if kind == "intl":
        return rng.choice(INTL_ORGS)
    if kind == "science":
        if rng.random() < 0.3:
            return f"{_strip_the(rng.choice(COUNTRIES))} Space Agency"
        return rng.choice(SCIENCE_ORGS)
    if kind == "airline":
        r = rng.random()
        if r < 0.5:
            return rng.choice(AIRLINES)
        if r < 0.75:
            return f"{rng.choice(ORG_PREFIX)} Airlines"
        return f"{rng.choice(ORG_PREFIX)} Air"
    if kind == "team":
        r = rng.random()
        city = rng.choice(CITIES)
        if r < 0.6:
            return f"{city} {rng.choice(TEAM_NICKNAMES)}"
        if r < 0.75:
            return f"FC {city}"
        return rng.choice(REAL_TEAMS)
    if kind == "univ":
        if rng.random() < 0.25:
            return rng.choice(REAL_UNIVS)
        form = rng.choice(UNIV_FORMS)
        return form.format(city=rng.choice(CITIES), last=rng.choice(LAST_NAMES))
    if kind == "news":
        if rng.random() < 0.6:
            return rng.choice(NEWS_ORGS)
        form = rng.choice(["{city} Daily News", "The {city} Herald", "The {city} Post", "{country} Today"])
        return form.format(city=rng.choice(CITIES), country=_strip_the(rng.choice(COUNTRIES)))
    if kind == "agency":
        form = rng.choice(AGENCY_FORMS)
        return form.format(city=rng.choice(CITIES), country=_strip_the(rng.choice(COUNTRIES)))
    raise ValueError(kind)


def gen_product(rng: random.Random, kind: str) -> str:
    if kind == "":
        kind = rng.choices(["device", "software", "vehicle", "other", "brand"], [30, 20, 12, 8, 30])[0]
    if kind == "brand":
        brand = rng.choice(PRODUCT_BRANDS)
        r = rng.random()
        if r < 0.35:
            return f"{brand} {rng.choice(PRODUCT_LINES)} {rng.randint(2, 15)}"
        if r < 0.6:
            return f"{brand} {rng.randint(2, 12)} {rng.choice(PRODUCT_LINES)}"
        if r < 0.8:
            return f"{brand} {rng.choice('XSZGTRK')}{rng.randint(1, 9)}{rng.choice(['', '0', '00'])}"
        return f"{brand} {rng.choice(PRODUCT_LINES)}"
    pool = REAL_PRODUCTS[kind]
    if rng.random() < 0.45:  # fictional models of the same kind
        brand = rng.choice(PRODUCT_BRANDS)
        if kind == "device":
            return f"{brand} {rng.choice(['Phone', 'Tab', 'Book', 'Buds', 'Watch', 'Cam'])} {rng.randint(2, 14)}"
        if kind == "software":
            return f"{brand}{rng.choice(['Desk', 'Chat', 'Notes', 'Sync', 'Pay', 'Maps'])}"
        if kind == "vehicle":
            return f"{brand} {rng.choice(['E', 'GT', 'EV', 'S'])}{rng.randint(1, 9)}"
        return f"{brand} {rng.choice(['Cola', 'Cold Brew', 'Energy', 'Runner', 'Blender'])}"
    return rng.choice(pool)


def gen_date(rng: random.Random, kind: str) -> str:
    year = rng.randint(1988, 2031)
    m = rng.randrange(12)
    day = rng.randint(1, 28)
    if kind == "":
        kind = rng.choices(["on", "in"], [60, 40])[0]
    if kind == "on":
        kind = rng.choices(["mdy", "dmy", "md", "dm", "weekday", "ord", "iso", "abbr"],
                           [20, 18, 18, 10, 16, 8, 5, 5])[0]
    elif kind == "in":
        kind = rng.choices(["year", "monthyear", "month"], [45, 35, 20])[0]
    if kind == "mdy":
        return f"{MONTHS[m]} {day}, {year}"
    if kind == "dmy":
        return f"{day} {MONTHS[m]} {year}"
    if kind == "md":
        return f"{MONTHS[m]} {day}"
    if kind == "dm":
        return f"{day} {MONTHS[m]}"
    if kind == "weekday":
        return rng.choice(WEEKDAYS)
    if kind == "ord":
        return f"{ordinal(day)} of {MONTHS[m]}"
    if kind == "iso":
        return f"{year}-{m + 1:02d}-{day:02d}"
    if kind == "abbr":
        return f"{day} {MONTH_ABBR[m]} {year}"
    if kind == "year":
        return str(year)
    if kind == "monthyear":
        return f"{MONTHS[m]} {year}"
    if kind == "month":
        return MONTHS[m]
    raise ValueError(kind)


GENERATORS = {"P": ("person", gen_person), "O": ("organization", gen_org),
              "L": ("location", gen_location), "D": ("date", gen_date), "R": ("product", gen_product)}
