"""How config values are spelled as text: sizes ("400GB", "512MiB"), numbers as a person writes them, and
strings quoted in messages or written as TOML literals. Reading a size and writing it back are inverses:
`parse_size(format_size(n)) == n`."""

from __future__ import annotations

import json
import re
from decimal import Decimal

# Decimal units are powers of 1000 and binary units powers of 1024, matching
# what disk vendors (GB) and `df -h`-style tools (GiB) print. Lookup is on the
# lower-cased unit, so "gb", "GB" and "Gb" are all gigabytes.
_SIZE_UNITS: dict[str, int] = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "m": 1000**2,
    "mb": 1000**2,
    "g": 1000**3,
    "gb": 1000**3,
    "t": 1000**4,
    "tb": 1000**4,
    "ki": 1024,
    "kib": 1024,
    "mi": 1024**2,
    "mib": 1024**2,
    "gi": 1024**3,
    "gib": 1024**3,
    "ti": 1024**4,
    "tib": 1024**4,
}
# Largest first, so format_size writes "2GiB" rather than "2048MiB".
_SIZE_NAMES = (
    ("TiB", 1024**4),
    ("TB", 1000**4),
    ("GiB", 1024**3),
    ("GB", 1000**3),
    ("MiB", 1024**2),
    ("MB", 1000**2),
    ("KiB", 1024),
    ("kB", 1000),
)
_SIZE_TEXT = re.compile(r"\s*([0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*([A-Za-z]*)\s*")


def parse_size(text: str | int) -> int:
    """Parse a size such as "400GB", "2 GB", "512MiB", "1.5TB", "1000" or 1000.

    k/M/G/T (with or without a trailing B) are powers of 1000 and
    KiB/MiB/GiB/TiB powers of 1024; units are case-insensitive; a bare number
    is bytes. Fractional results are rounded down to whole bytes. Raises
    ValueError for text that is not a size or is negative, and TypeError for
    anything that is neither a str nor an int.
    """
    # bool is an int subclass, but `quota = true` is a mistake, not 1 byte.
    if isinstance(text, bool) or not isinstance(text, (str, int)):
        raise TypeError(
            f'a size must be a string like "2GB" or an int, got {type(text).__name__}'
        )
    if isinstance(text, int):
        if text < 0:
            raise ValueError(f"{text} is negative: a size must be 0 or more")
        return text
    quoted = quote(text)
    if text.strip().startswith("-"):
        raise ValueError(f"{quoted} is negative: a size must be 0 or more")
    match = _SIZE_TEXT.fullmatch(text)
    if match is None:
        raise ValueError(
            f"{quoted} is not a size: use a number of bytes or a number with a "
            'unit, e.g. "400GB", "2 GB", "512MiB" or "1.5TB"'
        )
    number, unit = match.groups()
    multiplier = _SIZE_UNITS.get(unit.lower())
    if multiplier is None:
        raise ValueError(
            f'{quoted} has an unknown unit "{unit}": use B, kB, MB, GB, TB '
            "(powers of 1000) or KiB, MiB, GiB, TiB (powers of 1024)"
        )
    # Decimal, not float: "1.1TB" must be exactly 1_100_000_000_000 bytes.
    return int(Decimal(number) * multiplier)


def format_size(size: int) -> str:
    """The shortest exact spelling of a byte count that parse_size reads back."""
    for unit, multiplier in _SIZE_NAMES:
        if size >= multiplier and size % multiplier == 0:
            return f"{size // multiplier}{unit}"
    # An explicit "B" keeps a small quota from reading as a unit-less number,
    # which the quota check rejects as a probable percentage.
    return f"{size}B" if size else "0"


def plain_number(value: float) -> str:
    """A number as a person writes it: 120 not 120.0, 0.00001 not 1e-05."""
    if float(value).is_integer():
        return str(int(value))
    return format(Decimal(repr(float(value))), "f")


def quote(text: str) -> str:
    """Show a user's string in a message, in double quotes, with escapes."""
    return json.dumps(text, ensure_ascii=False)


def toml_string(text: str) -> str:
    # JSON string escapes are valid TOML basic-string escapes. JSON leaves
    # DEL (U+007F) raw, which TOML forbids in basic strings, so escape it too.
    # ensure_ascii=False keeps non-BMP characters whole: JSON's \ud83d\ude00
    # surrogate-pair escapes are not valid TOML.
    return json.dumps(text, ensure_ascii=False).replace("\x7f", "\\u007f")


def toml_number(value: float) -> str:
    if isinstance(value, bool):
        raise TypeError("a boolean is not a number")
    if isinstance(value, int):
        return str(value)
    if value.is_integer() and abs(value) < 2**53:
        return str(int(value))
    # repr() of a finite float is valid TOML ("0.5", "1e-05", "1e+16").
    return repr(value)
