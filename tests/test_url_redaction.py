"""Camera passwords never reach an error, a log line or a repr, whatever the URL's shape and whatever the
password holds (core.url_redaction, and the config checker's messages built with it)."""

from __future__ import annotations

from urllib.parse import quote as percent_encoded

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from edgenvr.config.checking import ConfigError, parse_config
from edgenvr.config.values import quote, toml_string
from edgenvr.core.url_redaction import REDACTED, redact_text, redact_url

PROPERTY = settings(max_examples=200, deadline=None)
PASSWORD = "Hunter2-pw"

# {user} and {pw} are filled in; each is a way a technician writes (or mistypes) a camera URL.
USERINFO_SHAPES = [
    "rtsp://{user}:{pw}@192.0.2.10:554/Streaming/Channels/101",
    "rtsp:/{user}:{pw}@192.0.2.10/live",            # one slash
    "rtsp//{user}:{pw}@192.0.2.10/live",            # no colon
    "RTSP://{user}:{pw}@CAM-7.LOCAL/live",          # upper case
    "rtsps://{user}:{pw}@[2001:db8::1]:322/x",
    "rtsp:{user}:{pw}@192.0.2.10/live",             # no slashes
    "http://{user}:{pw}@192.0.2.10/snapshot.jpg",
]
NO_SCHEME_SHAPE = "{user}:{pw}@192.0.2.10/live"      # scheme forgotten
QUERY_SHAPES = [
    "rtsp://192.0.2.10/live?user={user}&password={pw}",
    "rtsp://192.0.2.10/cgi-bin/stream?channel=1&pwd={pw}&user={user}",
    "RTSP://192.0.2.10/live?User={user}&PassWord={pw}#frag",
]
# What libav and PyAV say about a URL they could not open; {url} is the URL as the recorder passed it.
LIBAV_TEXTS = [
    "{url}: Server returned 401 Unauthorized (authorization failed)",
    "[Errno 1094995529] Invalid data found when processing input: '{url}'",
    "[rtsp @ 0x55d0c8a2c1c0] method DESCRIBE failed: 401 Unauthorized\n{url}: Server returned 401 Unauthorized",
    "retrying '{url}' and rtsp://cam.local/live [tcp @ 0x7f3a]",
]


@pytest.mark.parametrize(("url", "shown"), [
    # the leaking shapes
    (f"rtsp:/admin:{PASSWORD}@192.0.2.10/live", "rtsp:/admin:***@192.0.2.10/live"),
    (f"rtsp//admin:{PASSWORD}@192.0.2.10/live", "rtsp//admin:***@192.0.2.10/live"),
    ("rtsp://admin:Hunter/2@192.0.2.10/live", "rtsp://admin:***@192.0.2.10/live"),
    ("rtsp://admin:Hunter 2@192.0.2.10/live", "rtsp://admin:***@192.0.2.10/live"),
    ("rtsp://admin:Hunter@2@192.0.2.10/live", "rtsp://admin:***@192.0.2.10/live"),
    (f"RTSP://ADMIN:{PASSWORD}@192.0.2.10/live", "RTSP://ADMIN:***@192.0.2.10/live"),
    (f"rtsp://192.0.2.10/live?user=admin&password={PASSWORD}", "rtsp://192.0.2.10/live?user=admin&password=***"),
    (f"rtsp://192.0.2.10/live?pwd={PASSWORD}&channel=1", "rtsp://192.0.2.10/live?pwd=***&channel=1"),
    # and the user name and host stay, so an operator can tell which camera and account failed
    (f"admin:{PASSWORD}@192.0.2.10/live", "admin:***@192.0.2.10/live"),
    (f"rtsp:admin:{PASSWORD}@192.0.2.10", "rtsp:admin:***@192.0.2.10"),
    (f"rtsp://me@corp:{PASSWORD}@192.0.2.10", "rtsp://me@corp:***@192.0.2.10"),
])
def test_every_url_shape_hides_its_password(url: str, shown: str) -> None:
    assert redact_url(url) == shown
    assert redact_text(f"[rtsp @ 0x55d0] '{url}': 401 Unauthorized") == f"[rtsp @ 0x55d0] '{shown}': 401 Unauthorized"


@pytest.mark.parametrize("url", [
    f"rtsp:/admin:{PASSWORD}@192.0.2.10/live",
    f"rtsp//admin:{PASSWORD}@192.0.2.10/live",
    f"rtsp://admin:{PASSWORD}/x@192.0.2.10/live",
    f"rtsp://admin:{PASSWORD} x@192.0.2.10/live",
    f"rtsp://admin:{PASSWORD}/x y@192.0.2.10/live",
    f"http://192.0.2.10/live?user=admin&password={PASSWORD}",
])
def test_check_config_never_shows_the_password_of_a_malformed_url(url: str) -> None:
    with pytest.raises(ConfigError) as refused:
        parse_config(f'[[cameras]]\nid = "gate"\nurl = {toml_string(url)}\n')
    assert refused.value.problems[0].startswith("cameras[0].url: ")
    assert PASSWORD not in str(refused.value)


# --- properties ----------------------------------------------------------------------------------------

# Passwords from a broad alphabet, the troublesome characters often: no line breaks or other control
# characters (the config refuses them in URLs), no "*" (what a password is replaced with).
TROUBLESOME = st.sampled_from(list("/@:%?#&= '\"\\;!$+[]"))
ANY_PRINTABLE = st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp"), blacklist_characters="*")
PASSWORDS = st.text(alphabet=st.one_of(TROUBLESOME, ANY_PRINTABLE), min_size=3, max_size=24)
# Without whitespace, "&", "#" or quotes: what a password is in a query string (raw ones would end it) and in
# a scheme-less URL inside free text (which ends at whitespace; the config refuses such URLs, so libav never
# echoes one).
WORD_PASSWORDS = st.text(alphabet=st.one_of(st.sampled_from(list("/@:%?=;!$+")), st.characters(
    blacklist_categories=("Cc", "Cs", "Zl", "Zp", "Zs"), blacklist_characters="*&#'\"<>")), min_size=3, max_size=24)
USERS = st.sampled_from(["admin", "viewer.1", "me@corp", "", "ADMIN"])
# For whole messages and reprs, whose fixed words a short password could match by chance ("000" in
# "1000000000"): each holds a non-ASCII letter somewhere, which no fixed text of edgenvr has.
MARKED_PASSWORDS = st.tuples(
    st.text(alphabet=st.one_of(TROUBLESOME, st.characters(blacklist_categories=("Cs",), blacklist_characters="*")),
            max_size=12),
    st.characters(min_codepoint=0xC0, max_codepoint=0x24F),
    st.text(alphabet=st.one_of(TROUBLESOME, st.characters(blacklist_categories=("Cs",), blacklist_characters="*")),
            max_size=12),
).map("".join).filter(lambda password: len(password) >= 3)


def _visible(shape: str, user: str) -> str:
    """What may be shown: the shape with its password redacted."""
    return shape.format(user=user, pw=REDACTED)


@PROPERTY
@given(st.sampled_from([*USERINFO_SHAPES, NO_SCHEME_SHAPE]), USERS, PASSWORDS)
def test_no_password_survives_redact_url(shape: str, user: str, password: str) -> None:
    assume(password not in _visible(shape, user))   # else it is in the text legitimately (user, host)
    redacted = redact_url(shape.format(user=user, pw=password))
    assert password not in redacted


@PROPERTY
@given(st.sampled_from(QUERY_SHAPES), USERS, PASSWORDS)
def test_no_query_password_survives_redact_url(shape: str, user: str, password: str) -> None:
    encoded = percent_encoded(password, safe="")   # a query carries "&" or "#" only percent-encoded
    assume(encoded not in _visible(shape, user) and password not in _visible(shape, user))
    url = shape.format(user=user, pw=encoded)
    assert encoded not in redact_url(url) and encoded not in redact_text(f"cannot open '{url}'")


@PROPERTY
@given(st.sampled_from(LIBAV_TEXTS), st.sampled_from(USERINFO_SHAPES), USERS, PASSWORDS)
def test_no_password_survives_in_libav_error_texts(text: str, shape: str, user: str, password: str) -> None:
    visible = text.format(url=_visible(shape, user))
    assume(password not in visible)
    redacted = redact_text(text.format(url=shape.format(user=user, pw=password)))
    assert password not in redacted
    assert redact_text(redacted) == redacted, "redacting twice changes nothing"


@PROPERTY
@given(st.sampled_from(LIBAV_TEXTS), st.sampled_from([NO_SCHEME_SHAPE, *QUERY_SHAPES]), USERS, WORD_PASSWORDS)
def test_no_word_password_survives_in_free_text(text: str, shape: str, user: str, password: str) -> None:
    assume(user or shape != NO_SCHEME_SHAPE)   # ":pw@host" alone in free text is not taken for a URL
    visible = text.format(url=_visible(shape, user))
    assume(password not in visible)
    assert password not in redact_text(text.format(url=shape.format(user=user, pw=password)))


@PROPERTY
@given(st.sampled_from([*USERINFO_SHAPES, NO_SCHEME_SHAPE, *QUERY_SHAPES]), USERS, MARKED_PASSWORDS,
       st.sampled_from(["url", "detect_url", "enabled"]))
def test_no_password_survives_in_config_errors_or_reprs(shape: str, user: str, password: str, key: str) -> None:
    visible = _visible(shape, user)
    assume(password not in visible and quote(password)[1:-1] not in quote(visible))
    url = shape.format(user=user, pw=password)
    text = f'[[cameras]]\nid = "gate"\nurl = "rtsp://192.0.2.10/main"\n{key} = {toml_string(url)}\n'
    if key == "url":
        text = f'[[cameras]]\nid = "gate"\nurl = {toml_string(url)}\n'
    try:
        config = parse_config(text)
    except ConfigError as refused:
        shown = str(refused)
    else:
        shown = repr(config) + str(config.cameras[0])
    assert password not in shown and quote(password)[1:-1] not in shown
