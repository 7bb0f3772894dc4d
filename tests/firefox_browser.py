"""Debian's Firefox ESR, headless, driven through Marionette (Mozilla's own `marionette-driver` client) for the
tests that must hold in Firefox as well as Chromium (issue 11: video.mp4 plays and seeks in a plain <video>).

Playwright drives only its own patched Firefox (not downloadable here) or a Firefox new enough for its WebDriver
BiDi commands (ESR 153 lacks emulation.setMediaFeaturesOverride, which it sends for every new page), so this
starts `firefox-esr --headless --marionette` on a private profile and port and offers what the tests use:
navigate, run a script (its promise awaited), and wait for a condition.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest

STARTUP_SECONDS = 60.0


class Firefox:
    """`with Firefox() as browser:` a fresh headless Firefox; skipped when Debian's firefox-esr is missing."""

    def __enter__(self) -> Firefox:
        marionette = pytest.importorskip("marionette_driver.marionette")
        binary = shutil.which("firefox-esr") or shutil.which("firefox")
        if binary is None:
            pytest.skip("no firefox-esr installed (scripts/setup test installs it)")
        self._profile = tempfile.TemporaryDirectory(prefix="edgenvr-firefox-")
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        prefs = {"marionette.port": port, "media.autoplay.default": 0,   # muted autoplay, as Chromium allows
                 "browser.shell.checkDefaultBrowser": False, "datareporting.policy.dataSubmissionEnabled": False,
                 "toolkit.telemetry.reportingpolicy.firstRun": False, "app.update.disabledForTesting": True}
        Path(self._profile.name, "user.js").write_text(
            "".join(f'user_pref("{key}", {str(value).lower() if isinstance(value, bool) else value});\n'
                    for key, value in prefs.items()))
        self._process = subprocess.Popen([binary, "--headless", "--marionette", "--no-remote",
                                          "--profile", self._profile.name],
                                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            self.client = marionette.Marionette(host="127.0.0.1", port=port, startup_timeout=STARTUP_SECONDS)
            self.client.start_session()
            self.client.timeout.script = 60
        except BaseException:
            self._stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.client.delete_session()
        finally:
            self._stop()

    def _stop(self) -> None:
        self._process.terminate()
        try:
            self._process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._profile.cleanup()

    def goto(self, url: str) -> None:
        self.client.navigate(url)

    def evaluate(self, function: str, argument: Any = None) -> Any:
        """Call a JavaScript function expression with one argument and return its (awaited) result, as
        Playwright's page.evaluate does."""
        return self.client.execute_script(f"return ({function})(arguments[0]);", script_args=[argument])

    def wait_for(self, expression: str, timeout_ms: float) -> None:
        """Until the JavaScript expression is truthy; AssertionError with the expression after timeout_ms."""
        deadline = time.monotonic() + timeout_ms / 1000
        while not self.client.execute_script(f"return Boolean({expression});"):
            if time.monotonic() > deadline:
                raise AssertionError(f"Firefox: still false after {timeout_ms / 1000:.0f} s: {expression}")
            time.sleep(0.1)
