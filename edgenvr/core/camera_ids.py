"""The camera-id rule, the one check every path, URL and bus message that names a camera goes through.

A camera id is 1-32 characters a-z, 0-9 and "-", starting with a letter or digit: safe as a directory
name and in a URL, never "..", never empty. `fullmatch` only: `$` would accept a trailing newline."""

from __future__ import annotations

import re

CAMERA_ID_RULE = 'use 1-32 characters a-z, 0-9 and "-", starting with a letter or digit'
_CAMERA_ID = re.compile(r"[a-z0-9][a-z0-9-]{0,31}")


def is_camera_id(text: object) -> bool:
    return isinstance(text, str) and _CAMERA_ID.fullmatch(text) is not None
