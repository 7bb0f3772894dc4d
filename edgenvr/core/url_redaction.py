"""Redaction of credentials embedded in URLs.

This module owns one rule for the whole project: a camera password must never
reach a log line, an error message, a repr() or an HTTP response. Camera URLs
carry credentials in their userinfo part (``rtsp://user:password@host/...``),
and FFmpeg/PyAV echo the full URL in their error messages, so everything that
prints a URL or a third-party error text passes it through here first.

Only the password is hidden; the user name and the host stay visible because
they are what an operator needs to tell which camera and which account failed.
"""

from __future__ import annotations

import re

__all__ = ["REDACTED", "redact_url", "redact_text"]

#: What a password is replaced with.
REDACTED = "***"

_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://")

# In free text a URL has no delimiters, so the authority is taken to end at
# whitespace or at "/", "?" or "#" (RFC 3986 section 3.2). The user part may
# contain "@" ("me@corp:pw@host") and the password part runs greedily to the
# LAST "@" before that end, the same way FFmpeg and urllib split userinfo from
# the host, so a password with an unencoded "@" is hidden completely rather
# than leaking its tail.
_CREDENTIALS_IN_TEXT = re.compile(
    r"(?P<prefix>[A-Za-z][A-Za-z0-9+.\-]*://)(?P<user>[^\s/?#:]*):[^\s/?#]*@"
)


def redact_url(url: str) -> str:
    """Return ``url`` with the password of its userinfo replaced by ``***``.

    ``rtsp://user:pass@host/path`` becomes ``rtsp://user:***@host/path``; a URL
    without a password (no userinfo, or a user name alone) is returned
    unchanged. Works for any scheme. A string with no ``scheme://`` prefix is
    treated as starting at the authority, so a mistyped camera URL such as
    ``admin:secret@192.0.2.10/stream`` is still redacted; the price is that a
    ``mailto:joe@host``-style string is redacted too, which is harmless.
    """
    match = _SCHEME.match(url)
    start = match.end() if match else 0
    end = len(url)
    for index in range(start, len(url)):
        if url[index] in "/?#":
            end = index
            break
    at = url.rfind("@", start, end)
    if at == -1:
        return url
    user, colon, _password = url[start:at].partition(":")
    if not colon:
        return url
    return f"{url[:start]}{user}:{REDACTED}{url[at:]}"


def redact_text(text: str) -> str:
    """Redact every ``scheme://user:password@`` occurrence inside ``text``.

    Meant for messages we did not write, e.g. an FFmpeg error that quotes the
    camera URL it failed to open. Idempotent: redacting twice changes nothing.
    """
    return _CREDENTIALS_IN_TEXT.sub(
        lambda match: f"{match['prefix']}{match['user']}:{REDACTED}@", text
    )
