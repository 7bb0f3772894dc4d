"""No command prints a traceback, whatever a technician types: every input ends in exit 0, 1 or 2 with a
message (edgenvr.cli.main, run in this process so that many inputs are cheap)."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from edgenvr.cli.main import main as cli_main
from edgenvr.index import schema as index_schema

PROPERTY = settings(max_examples=200, deadline=None)

CONFIG = "{config}"   # replaced by the recorded box's config


@pytest.fixture(scope="module")
def recorded_box(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A config with camera "gate" and its index; commands read it, or add and release holds, which is fine."""
    box = tmp_path_factory.mktemp("box")
    config = box / "c.toml"
    config.write_text(f'[storage]\ndata_dir = "{box}/data"\nmin_free = "0"\n'
                      '[[cameras]]\nid = "gate"\nurl = "rtsp://192.0.2.10/a"\n')
    index_schema.connect(box / "data" / "index.sqlite3").close()
    return config

# What people type for a time, an id or a name: near misses of the real forms, huge numbers, undecodable
# bytes (argv keeps them as lone surrogates), and anything at all.
TIMES = st.one_of(
    st.sampled_from(["2026-11-30", "20261130T0100Z", "2026", "@1732924800", "1732924800000ms", "1732924800",
                     "0", "@-1", "@253402300800", "99999999999999999999999", "9999-12-31T23:59-01:00",
                     "10000-01-01", "1969-12-31", "2026-02-30", "yesterday", "", "caf\udce9"]),
    st.from_regex(r"@?-?[0-9]{1,30}(ms)?", fullmatch=True),
    st.text(max_size=20),
)
WORDS = st.one_of(st.sampled_from(["gate", "garage", "../x", "", " ", "x" * 600, "caf\udce9", "a\nb"]),
                  st.text(max_size=20))
IDS = st.one_of(st.sampled_from(["1", "0", "-1", "99999999999999999999999", "1.5", "x", "\u0661"]), st.text(max_size=8))


@st.composite
def command_lines(draw: st.DrawFn) -> list[str]:
    config = ["--config", CONFIG]
    times = [item for option in ("--since", "--until") if draw(st.booleans())
             for item in (option, draw(TIMES))]
    camera = ["--camera", draw(WORDS)] if draw(st.booleans()) else []
    return draw(st.sampled_from([
        ["segments", *config, *camera, *times, "--json"],
        ["gaps", *config, *camera, *times],
        ["events", *config, *camera, *times],
        ["status", *config],
        ["check-index", *config],
        ["retention", *config],
        ["hold", "list", *config, *camera, "--all"],
        ["hold", "add", *config, "--camera", draw(WORDS), "--from", draw(TIMES), "--to", draw(TIMES),
         "--reason", draw(WORDS)],
        ["hold", "release", *config, draw(IDS), "--reason", draw(WORDS)],
    ]))


@PROPERTY
@given(command_lines())
# inputs that gave a traceback once: a hold id and times beyond 64 bits, undecodable bytes, year 10000
@example(["hold", "release", "--config", CONFIG, "99999999999999999999999"])
@example(["gaps", "--config", CONFIG, "--since", "99999999999999999999999"])
@example(["segments", "--config", CONFIG, "--camera", "caf\udce9"])
@example(["hold", "add", "--config", CONFIG, "--camera", "gate", "--from", "20261130", "--to", "@253402300800",
          "--reason", "x"])
def test_every_command_line_ends_in_an_exit_code_never_a_traceback(recorded_box: Path, argv: list[str]) -> None:
    argv = [str(recorded_box) if arg == CONFIG else arg for arg in argv]
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = cli_main(argv)
        except SystemExit as exit_:   # argparse and config errors
            code = exit_.code if isinstance(exit_.code, int) else 2
    assert code in (0, 1, 2), (argv, code, err.getvalue())
    if code:
        assert err.getvalue().strip(), f"{argv}: exit {code} without a word"
