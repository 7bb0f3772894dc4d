"""Whatever a config file holds, reading it gives a usable Config or a ConfigError naming the problems, never a
crash; and whatever is accepted is within the bounds its key declares, so no accepted value can overflow the
computations that use it (`max_age_days = 1e12` once crashed the first sweep)."""

from __future__ import annotations

import math
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from edgenvr.config.checking import ConfigError, parse_config
from edgenvr.config.keys import ConfigKey, Kind, keys_of
from edgenvr.config.records import CONFIG_KEYS, Config, Quota, section_keys
from edgenvr.config.values import toml_string
from edgenvr.config.writing import config_to_toml
from edgenvr.core.units import DAY_MS, OPEN_END_MS, SECOND_MS

PROPERTY = settings(max_examples=200, deadline=None)
TOKEN = "enrol_Q7vX2-kLmN9pR4sT6uW8"   # [sync]'s enrolment token: a secret no message may show

# TOML literals of every type, weighted to the values that break things: huge, tiny, negative, not finite,
# sizes and percentages as text, wrong types.
NUMBERS = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(
        lambda value: "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf") if math.isinf(value)
        else repr(value)),
    st.sampled_from(["0", "1", "-1", "1e12", "1e308", "5e-324", "36500", "36500.5", "600", "3600.1", "64", "65"]),
)
TEXTS = st.one_of(
    st.text(max_size=20).map(toml_string),
    st.from_regex(r"-?[0-9]{1,25}(\.[0-9]{0,4})? ?(k|M|G|T|P|Ki|Mi|Gi|Ti)?B?%?", fullmatch=True).map(toml_string),
    st.sampled_from(['"90%"', '"0%"', '"100.5%"', '"1e3GB"', '"20000TB"', '"10000TB"', '"rtsp://a:b@h/x"',
                     '"rtsp:/a:b@h"', '"~nobody-here/x"', '"debug"', '"gate"', '"../x"']),
)
SCALARS = st.one_of(NUMBERS, TEXTS, st.sampled_from(["true", "false", "2026-11-30", "01:00:00", "[]", "{}"]))
VALUES = st.recursive(SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=4).map(lambda items: "[" + ", ".join(items) + "]"),
    st.dictionaries(st.sampled_from(["name", "polygon", "x", "fps"]), inner, max_size=3).map(
        lambda table: "{" + ", ".join(f"{key} = {value}" for key, value in table.items()) + "}")), max_leaves=6)


def _near_bounds(key: ConfigKey) -> st.SearchStrategy[str]:
    """Numbers at, inside and just outside the key's declared bounds, where mistakes in the checks show."""
    edges = [edge for edge in (key.greater_than, key.at_least, key.at_most) if edge is not None]
    low, high = min(edges, default=0.0), max(edges, default=1e6)
    inside = st.floats(min_value=low, max_value=high) if key.kind is Kind.NUMBER else st.integers(
        min_value=int(low), max_value=int(high))
    return st.one_of(inside.map(repr), st.sampled_from(
        [repr(edge + step) for edge in edges for step in (-1, -0.5, 0, 0.5, 1)] + ["1e12", "1e308", str(2**63)]))


def _likely_value(key: ConfigKey) -> st.SearchStrategy[str]:
    """A value of the key's kind, often a valid one, so that many documents are accepted and checked."""
    match key.kind:
        case Kind.NUMBER | Kind.WHOLE_NUMBER:
            return _near_bounds(key)
        case Kind.SIZE | Kind.QUOTA:
            sizes = st.integers(min_value=0, max_value=2 * int(key.at_most or 10**16))
            return st.one_of(sizes.map(str), sizes.map(lambda size: toml_string(f"{size}B")),
                             st.floats(min_value=-1, max_value=120).map(lambda percent: toml_string(f"{percent}%")),
                             st.sampled_from(['"10000TB"', '"10001TB"', '"2GB"', '"0"']))
        case Kind.BOOLEAN:
            return st.sampled_from(["true", "false"])
        case Kind.LOG_LEVEL:
            return st.sampled_from(['"debug"', '"INFO"', '"verbose"'])
        case Kind.POLYGONS:
            return st.sampled_from(["[[[0, 0], [1, 0], [1, 1]]]", "[]"])
        case Kind.POLYGON:
            return st.sampled_from(["[[0, 0], [1, 0], [1, 1]]", "[[0, 0], [1, 0], [1, 2]]"])
        case Kind.STRING | Kind.CAMERA_ID:
            return st.sampled_from(['"pintu"', '"gate"', '""', '"Gate 1"'])
        case Kind.PATH:
            return st.sampled_from(['"/var/lib/edgenvr"', '"data"', '"~/x"', '""'])
        case Kind.URL:
            return st.sampled_from(['"rtsp://192.0.2.10/x"', '"rtsps://a:b@192.0.2.10:322/x"', '"http://h/x"'])
        case Kind.HUB_URL:
            return st.sampled_from(['"https://hub.example.id:8443"', '"http://10.0.0.2/hub"', '"https://a:b@h/"',
                                    '"ftp://h"', '"https://h/#x"', '"https://h:0"', '""'])
        case Kind.SECRET:
            return st.sampled_from([toml_string(TOKEN), '""', '"enrol_a b"', '"enrol_\\u0007"'])
        case Kind.FINGERPRINT:
            return st.one_of(st.binary(min_size=30, max_size=34).map(lambda digest: toml_string(digest.hex(":"))),
                             st.binary(min_size=32, max_size=32).map(lambda digest: toml_string(digest.hex())))
        case Kind.TIME_WINDOWS:
            times = st.tuples(st.integers(min_value=0, max_value=25), st.integers(min_value=0, max_value=61)).map(
                lambda time: f"{time[0]:02d}:{time[1]:02d}")
            windows = st.tuples(times, times).map(lambda ends: toml_string("-".join(ends)))
            return st.lists(windows, max_size=3).map(lambda items: "[" + ", ".join(items) + "]")
    return VALUES


def _table(section: str) -> st.SearchStrategy[str]:
    keys = section_keys(section)
    likely = st.sampled_from(keys).flatmap(lambda key: st.tuples(st.just(key.name), _likely_value(key)))
    anything = st.tuples(st.sampled_from([*(key.name for key in keys), "frobnicate"]), VALUES)
    return st.lists(st.one_of(likely, likely, likely, likely, anything), max_size=5,
                    unique_by=lambda pair: pair[0]).map(
        lambda pairs: "".join(f"{name} = {value}\n" for name, value in pairs))


@st.composite
def config_documents(draw: st.DrawFn) -> str:
    """A TOML document with the config's tables, each key given a random value (or left out)."""
    text = ""
    for section in ("storage", "recording", "motion", "logging"):
        if draw(st.booleans()):
            text += f"[{section}]\n" + draw(_table(section))
    if draw(st.booleans()):   # [sync], most often with the hub it requires
        hub = 'hub_url = "https://hub.example.id:8443"\n' if draw(st.integers(min_value=0, max_value=9)) else ""
        text += "[sync]\n" + hub + draw(_table("sync").map(lambda body: "\n".join(
            line for line in body.splitlines() if not (hub and line.startswith("hub_url ="))) + "\n"))
    for number in range(draw(st.integers(min_value=0, max_value=2))):
        text += f'[[cameras]]\nid = "cam-{number}"\nurl = "rtsp://192.0.2.10/{number}"\n'
        if draw(st.integers(min_value=0, max_value=9)) == 0:   # now and then a camera without its id and url
            text = text.rsplit("[[cameras]]", 1)[0] + "[[cameras]]\n"
        text += draw(_table("cameras").map(lambda body: "\n".join(
            line for line in body.splitlines() if not line.startswith(("id =", "url =", "motion ="))) + "\n"))
        if draw(st.booleans()):
            text += "[cameras.motion]\n" + draw(_table("cameras.motion").map(lambda body: "\n".join(
                line for line in body.splitlines() if not line.startswith("zones =")) + "\n"))
            for zone in range(draw(st.integers(min_value=0, max_value=2))):
                text += f'[[cameras.motion.zones]]\nname = "zone-{zone}"\npolygon = [[0, 0], [1, 0], [1, 1]]\n'
                text += draw(_table("cameras.motion.zones").map(lambda body: "\n".join(
                    line for line in body.splitlines() if not line.startswith(("name =", "polygon ="))) + "\n"))
    return text


def _within(key: ConfigKey, value: Any) -> bool:
    if value is None:
        return True   # optional keys: "not set"
    if key.kind is Kind.QUOTA:
        assert isinstance(value, Quota)
        return (value.percent is not None and 0 < value.percent <= 100) or (
            value.bytes is not None and 0 < value.bytes <= (key.at_most or math.inf))
    assert isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    return ((key.greater_than is None or value > key.greater_than)
            and (key.at_least is None or value >= key.at_least)
            and (key.at_most is None or value <= key.at_most))


def _usable(key: ConfigKey, value: Any) -> bool:
    """The value, as the recorder and retention use it (days and seconds as epoch ms, bytes as SQLite
    integers), stays far inside 64 bits: below the open-end sentinel every time range compares against."""
    if value is None or key.kind is Kind.QUOTA and value.bytes is None:
        return True
    number = value.bytes if key.kind is Kind.QUOTA else value
    scale = {"days": DAY_MS, "seconds": SECOND_MS}.get(key.unit, 1)
    return abs(number * scale) < OPEN_END_MS


def _bounded_values(config: Config) -> list[tuple[ConfigKey, Any]]:
    records: list[tuple[str, object]] = [("storage", config.storage), ("recording", config.recording),
                                         ("motion", config), ("sync", config.sync)]
    for camera in config.cameras:
        records += [("cameras", camera), ("cameras.motion", camera.motion)]
    return [(key, getattr(record, key.attribute)) for section, record in records
            for key in keys_of(type(record), section)
            if key.kind in (Kind.NUMBER, Kind.WHOLE_NUMBER, Kind.SIZE, Kind.QUOTA)]


@PROPERTY
@given(config_documents())
def test_any_document_gives_a_config_within_bounds_or_a_config_error(text: str) -> None:
    try:
        config = parse_config(text)
    except ConfigError as refused:
        assert refused.problems and all(problem.strip() for problem in refused.problems)
        return
    for key, value in _bounded_values(config):
        assert _within(key, value), f"{key.path} = {value!r} accepted, outside {key.allowed}"
        assert _usable(key, value), f"{key.path} = {value!r} accepted, too large to compute with"
    assert parse_config(config_to_toml(config)) == config, "an accepted config is written back as read"


@PROPERTY
@given(st.text(max_size=200))
def test_any_text_gives_a_config_or_a_config_error(text: str) -> None:
    try:
        parse_config(text)
    except ConfigError:
        pass


# Keys of top-level tables whose value is one TOML string or number: where a token may be pasted by mistake.
_SCALAR_KEYS = [key for key in CONFIG_KEYS if "." not in key.section and key.section != "cameras"
                and key.kind not in (Kind.TABLE, Kind.ZONES, Kind.POLYGON, Kind.POLYGONS)]


@PROPERTY
@given(st.sets(st.sampled_from(_SCALAR_KEYS), max_size=4),
       st.sampled_from([TOKEN, f" {TOKEN}", f"{TOKEN}\n", f'{TOKEN}"', f"{TOKEN}\\"]))
def test_the_enrolment_token_is_in_no_message_whatever_key_it_is_pasted_under(
        pasted_under: set[ConfigKey], token: str) -> None:
    tables: dict[str, dict[str, str]] = {"sync": {"enrolment_token": token}}
    for key in pasted_under:
        value = f"[{toml_string(token)}]" if key.kind is Kind.TIME_WINDOWS else toml_string(token)
        tables.setdefault(key.section, {})[key.name] = value
    text = "".join(f"[{section}]\n" + "".join(f"{name} = {value}\n" for name, value in table.items())
                   for section, table in tables.items())
    try:
        config = parse_config(text)
    except ConfigError as refused:
        assert refused.problems
        assert TOKEN not in str(refused), refused.problems
        return
    assert TOKEN not in repr(config) and TOKEN not in str(config)


def test_every_number_and_size_has_an_upper_bound() -> None:
    """What makes the property above mean something: no key of a numeric kind is unbounded above."""
    unbounded = [key.path for key in CONFIG_KEYS
                 if key.kind in (Kind.NUMBER, Kind.WHOLE_NUMBER, Kind.SIZE, Kind.QUOTA) and key.at_most is None]
    assert unbounded == []
