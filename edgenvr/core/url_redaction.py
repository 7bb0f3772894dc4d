"""Redaction of credentials embedded in URLs.

This module owns one rule for the whole project: a camera password must never
reach a log line, an error message, a repr() or an HTTP response. Camera URLs
carry credentials in their userinfo part (``rtsp://user:password@host/...``)
or, for some cameras, in the query (``?user=admin&password=...``), and
FFmpeg/PyAV echo the full URL in their error messages, so everything that
prints a URL or a third-party error text passes it through here first.

Only the password is hidden; the user name and the host stay visible because
they are what an operator needs to tell which camera and which account failed.

A password may hold any character but a line break ("/", "@", ":", "?", "#",
"%", spaces), and the URL around it may be mistyped ("rtsp:/", "rtsp//", no
scheme at all), so the rule does not rely on the URL being well formed:
- userinfo: the user name starts after a known scheme and its separator
  ("rtsp://", "rtsp:/", "rtsp//", "rtsp:", in any case), or where the URL
  starts; the password runs from the first ":" after it to the LAST "@" of the
  URL (in free text: of the line, where that "@" is followed by a host). Text
  before an "@" without a ":" is a user name alone and stays.
- query: the value of every parameter whose name says it is secret (password,
  passwd, pwd, pass, secret, token, key, auth, credential, signature), up to
  the next "&name=" (in free text: the next "&", "#", whitespace or quote).
Where the shape is unclear more is hidden, never less: two URLs with
credentials on one line, "rtsp://a:p1@h1 rtsp://b:p2@h2", become
"rtsp://a:***@h2".
"""

from __future__ import annotations

import re

__all__ = ["REDACTED", "redact_url", "redact_text"]

#: What a password is replaced with.
REDACTED = "***"

# Schemes a camera URL or a libav message may carry. Only these start a user name after "scheme:" or a
# mistyped "scheme:/", "scheme//": an unknown word before ":" may be the user name ("admin:pw@host").
_SCHEMES = r"(?:rtsp[su]?|rtmp[ste]?|https?|srt|udp|tcp|rtp|tls|mmsh?|ftp)"
_SCHEME_PREFIX = re.compile(rf"\s*{_SCHEMES}(?::/{{1,3}}|/{{2,3}}|:)", re.IGNORECASE)
_SECRET_NAME = r"[\w.%\[\]-]*(?:pass|pwd|secret|token|key|auth|cred|sig)[\w.%\[\]-]*="
# In a URL the value ends at the next "&name=": an unencoded "&" or "#" inside a password is hidden with it.
_QUERY_SECRET_IN_URL = re.compile(rf"(?P<name>[?&;]{_SECRET_NAME})(?:[^&]|&(?![\w.%\[\]-]*=))*", re.IGNORECASE)
_QUERY_SECRET_IN_TEXT = re.compile(rf"(?P<name>[?&;]{_SECRET_NAME})[^&#\s'\"<>]*", re.IGNORECASE)
# Free text, after a known scheme: the password runs greedily to the last "@" on the line that is followed by
# a host (not by a space: "[rtsp @ 0x55d0]" is libav's log prefix, not a host).
_CREDENTIALS_AFTER_SCHEME = re.compile(
    rf"(?P<prefix>{_SCHEMES}(?::/{{1,3}}|/{{2,3}}|:))(?P<user>[^\s/?#:'\"<>]*):[^\r\n]*@(?=[^\s@])",
    re.IGNORECASE)
# Free text, a URL without a scheme ("admin:pw@host/x"): a whole word, not a known scheme, and the password
# ends at whitespace (free text gives no other end; such URLs never reach libav, see config.checking).
_CREDENTIALS_WITHOUT_SCHEME = re.compile(
    rf"(?<![^\s'\"(\[<,;=])(?!{_SCHEMES}:)(?P<user>[^\s/?#:'\"<>]+):\S*@(?=[^\s@])", re.IGNORECASE)


def redact_url(url: str) -> str:
    """Return ``url`` with its password (userinfo and secret query values) replaced by ``***``.

    ``rtsp://user:pass@host/path`` becomes ``rtsp://user:***@host/path``; a URL
    without a password (no userinfo, or a user name alone) is returned
    unchanged. Any shape is redacted, see the module's rules: ``rtsp:/u:p@h``,
    ``rtsp//u:p@h``, ``rtsp://u:p/w@h``, ``rtsp://u:p w@h``, ``u:p@h`` (no
    scheme; so a ``mailto:joe@host``-style string is redacted too, harmlessly),
    ``rtsp://h/x?user=u&password=p``.
    """
    url = _QUERY_SECRET_IN_URL.sub(lambda match: match["name"] + REDACTED, url)
    prefix = _SCHEME_PREFIX.match(url)
    start = prefix.end() if prefix else 0
    at = url.rfind("@", start)
    colon = url.find(":", start, at) if at != -1 else -1
    if colon == -1:
        return url   # no "@", or a user name alone
    return f"{url[:colon + 1]}{REDACTED}{url[at:]}"


def redact_text(text: str) -> str:
    """Redact every URL password inside ``text``.

    Meant for messages we did not write, e.g. an FFmpeg error that quotes the
    camera URL it failed to open. Idempotent: redacting twice changes nothing.
    """
    text = _QUERY_SECRET_IN_TEXT.sub(lambda match: match["name"] + REDACTED, text)
    text = _CREDENTIALS_AFTER_SCHEME.sub(lambda match: f"{match['prefix']}{match['user']}:{REDACTED}@", text)
    return _CREDENTIALS_WITHOUT_SCHEME.sub(lambda match: f"{match['user']}:{REDACTED}@", text)
