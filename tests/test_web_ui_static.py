"""The web UI's static files (edgenvr/web/static) keep their promises without a browser: the two message
catalogues have the same keys and placeholders; every key the code names exists; every state, kind, role and
audit action the server can send has its words; nothing breaks the Content-Security-Policy (no inline script or
style, no eval, no markup from strings); nothing is fetched from the internet; every import and /static/ path
names a file that is there; and each script parses (node --check, when node is installed)."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from edgenvr.core.records import AlertKind, EventKind, RecorderState, TamperKind
from edgenvr.evidence.audit import AuditAction
from edgenvr.web.accounts import Role

STATIC = Path(__file__).resolve().parent.parent / "edgenvr" / "web" / "static"
SCRIPTS = sorted(STATIC.rglob("*.js"))
LANGUAGES = ("id", "en")
PLACEHOLDER = re.compile(r"\{(\w+)\}")
# a message key in the code: a quoted, dotted, lower-case name ("playback.play"), not a file name
KEY_LITERAL = re.compile(r"""["'`]([a-z_]+(?:\.[a-z0-9_]+)+)["'`]""")
NOT_KEYS = {"edgenvr.language"}   # the localStorage entry of the chosen language
TENUM_PREFIX = re.compile(r"""tEnum\(\s*["']([a-z_.]+)["']""")


def _catalogue(lang: str) -> dict[str, str]:
    return json.loads((STATIC / "i18n" / f"{lang}.json").read_text(encoding="utf-8"))


def _code() -> str:
    return "\n".join(path.read_text(encoding="utf-8") for path in SCRIPTS)


def test_catalogues_have_the_same_keys_and_placeholders() -> None:
    indonesian, english = _catalogue("id"), _catalogue("en")
    assert indonesian.keys() == english.keys(), set(indonesian) ^ set(english)
    for key, text in indonesian.items():
        assert isinstance(text, str) and text.strip(), key
        assert isinstance(english[key], str) and english[key].strip(), key
        assert set(PLACEHOLDER.findall(text)) == set(PLACEHOLDER.findall(english[key])), key


def test_every_key_the_code_names_is_in_the_catalogues() -> None:
    code = _code()
    catalogue = _catalogue("id")
    prefixes = set(TENUM_PREFIX.findall(code))
    named = {key for key in KEY_LITERAL.findall(code)
             if key not in NOT_KEYS and not re.search(r"\.(js|json|css|png|jpg|svg|mp4)$", key)}
    missing = sorted(key for key in named if key not in catalogue and key not in prefixes)
    assert not missing, f"keys used in the code but missing from the catalogues: {missing}"


@pytest.mark.parametrize(("prefix", "values"), [
    ("state", [*RecorderState, "disabled"]),
    ("tamper", list(TamperKind)),
    ("event", list(EventKind)),
    ("events.only", list(EventKind)),
    ("subkind", list(AlertKind)),
    ("action", list(AuditAction)),
    ("role", list(Role)),
    ("role_help", list(Role)),
])
def test_every_value_the_server_sends_has_words(prefix: str, values: list[str]) -> None:
    catalogue = _catalogue("id")
    missing = [str(value) for value in values if f"{prefix}.{value}" not in catalogue]
    assert not missing, f"{prefix}.* lacks {missing}"


def test_the_audit_search_offers_every_action() -> None:
    source = (STATIC / "views" / "admin_audit.js").read_text(encoding="utf-8")
    listed = re.search(r"const ACTIONS = \[(.*?)\];", source, re.DOTALL)
    assert listed is not None
    assert set(re.findall(r'"(\w+)"', listed.group(1))) == {str(action) for action in AuditAction}


def test_nothing_breaks_the_content_security_policy() -> None:
    page = (STATIC / "index.html").read_text(encoding="utf-8")
    assert "<style" not in page.lower()
    assert not re.search(r"\sstyle\s*=", page, re.IGNORECASE), "inline style attribute"
    assert not re.search(r"\son[a-z]+\s*=", page, re.IGNORECASE), "inline event handler"
    for script in re.findall(r"<script\b[^>]*>(.*?)</script>", page, re.DOTALL | re.IGNORECASE):
        assert not script.strip(), "inline script"
    for path in SCRIPTS:
        source = _without_comments(path.read_text(encoding="utf-8"))
        for forbidden in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function",
                          "setAttribute(\"style\"", "style.cssText"):
            assert forbidden not in source, f"{path.name} uses {forbidden}"


def _without_comments(source: str) -> str:
    source = re.sub(r"/\*.*?\*/", "", source, flags=re.DOTALL)
    return re.sub(r"(?m)^\s*//.*$", "", source)


def test_nothing_is_fetched_from_the_internet() -> None:
    for path in STATIC.rglob("*"):
        if path.suffix in (".html", ".js", ".css", ".svg"):
            text = path.read_text(encoding="utf-8")
            urls = [url for url in re.findall(r"https?://[^\s\"')]+", text) if url != "http://www.w3.org/2000/svg"]
            assert not urls, f"{path.name} names {urls}"


def test_imports_and_static_paths_name_files_that_exist() -> None:
    for path in SCRIPTS:
        source = path.read_text(encoding="utf-8")
        for target in re.findall(r"""(?:^|\n)\s*import\s[^;]*?from\s+["'](\.{1,2}/[^"']+)["']""", source):
            assert (path.parent / target).resolve().is_file(), f"{path.name} imports {target}"
    for path in [STATIC / "index.html", STATIC / "app.css", *SCRIPTS]:
        for target in re.findall(r"/static/([A-Za-z0-9_./-]+\.[a-z]+)", path.read_text(encoding="utf-8")):
            assert (STATIC / target).is_file(), f"{path.name} names /static/{target}"


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda path: path.relative_to(STATIC).as_posix())
def test_each_script_parses(script: Path) -> None:
    # the scripts are ES modules: checked as such from stdin (a .js file alone would be read as CommonJS)
    result = subprocess.run(["node", "--input-type=module", "--check"], input=script.read_text(encoding="utf-8"),
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
