"""The `edgenvr` command line: run, demo, check-config, segments, gaps, status, check-index, hold, retention,
events, reference; the evidence commands (identity, export, report, verify, audit) are in cli.evidence_commands, the
users' in cli.user_commands, the city hub's (`edgenvr hub`) in cli.hub_commands.
Every action on footage or its protection (hold add/release, reference approve, export) is audited first.

No input makes it print a traceback: a bad argument (a time, a reversed range, an id, undecodable text) is
refused with a message and exit 2 before anything is opened, a bad config with its problems and exit 2 (1 for
check-config), an index it cannot use (missing, damaged, written by a newer edgenvr) with a message and exit 1.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import math
import os
import sqlite3
import sys
from dataclasses import asdict
from pathlib import Path

from edgenvr.cli.appliance_commands import add_appliance_commands
from edgenvr.cli.discover_command_line import add_discover_command
from edgenvr.cli.evidence_commands import actor, add_evidence_commands, audited
from edgenvr.cli.hub_command_line import add_hub_commands
from edgenvr.cli.user_commands import add_user_commands
from edgenvr.config.checking import ConfigError, check_data_dir, load_config
from edgenvr.config.records import Config
from edgenvr.core.clock import SYSTEM_CLOCK
from edgenvr.core.process_setup import setup_logging
from edgenvr.core.records import COMMISSIONING, EventKind, RecorderState
from edgenvr.core.time_format import TIME_FORMS, format_ms, parse_time_ms
from edgenvr.core.time_sync import time_sync_state
from edgenvr.index.schema import IndexVersionError
from edgenvr.storage.layout import StorageLayout
from edgenvr.sync import outbox

log = logging.getLogger("edgenvr")


def _time_arg(text: str) -> int:
    try:
        return parse_time_ms(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _text_arg(text: str) -> str:
    """Text that can be stored and shown: bytes the terminal's encoding cannot decode (which argv keeps as
    lone surrogates, and SQLite and stdout would refuse with a traceback) are refused here."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        shown = text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
        raise argparse.ArgumentTypeError(f"{shown!r} is not valid text in this terminal's encoding") from None
    return text


def _hold_id_arg(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value < 2**63:   # SQLite's integers; a larger one would not even reach the query
        raise argparse.ArgumentTypeError(f"{text!r} is not a hold id: use a number `edgenvr hold list --all` shows")
    return value


def _seconds_arg(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds more than 0")
    return value


def _refuse_reversed_ranges(args: argparse.Namespace) -> None:
    """A range that ends before it starts is a typo (swapped times, a wrong day): refused, exit 2, before
    anything is opened."""
    since, until = getattr(args, "since", None), getattr(args, "until", None)
    if since is not None and until is not None and since > until:
        print(f"edgenvr: --since {format_ms(since)} is after --until {format_ms(until)}: nothing could match",
              file=sys.stderr)
        raise SystemExit(2)
    start, end = getattr(args, "from_ms", None), getattr(args, "to_ms", None)
    if start is not None and end is not None and start >= end:
        what = "hold not added: the hold" if args.command == "hold" else f"{args.command}: the range"
        print(f"edgenvr: {what} must start before it ends: --from {format_ms(start)} is not"
              f" before --to {format_ms(end)}", file=sys.stderr)
        raise SystemExit(2)


def _load(path: str, *, for_recording: bool = False) -> Config:
    """The config at ``path``, or its problems on stderr and exit 2. ``for_recording`` also checks the data
    directory on this machine (writable, larger than min_free), as `run` is about to record into it."""
    try:
        config = load_config(path)
        if for_recording:
            check_data_dir(config)
        return config
    except ConfigError as exc:
        print(f"edgenvr: invalid config {path}:", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        raise SystemExit(2) from None


def cmd_run(args: argparse.Namespace) -> int:
    import os

    from edgenvr.runtime.supervisor import SupervisorError, run_supervisor
    from edgenvr.storage.permissions import DATA_UMASK

    # Whatever umask started us (a shell's 022), recorded video is never world-readable; the recorder and
    # motion processes inherit it (storage.permissions).
    os.umask(DATA_UMASK)
    config = _load(args.config, for_recording=True)
    setup_logging(args.log_level or config.log_level, "supervisor")
    try:
        run_supervisor(config)
    except SupervisorError as exc:
        log.error("%s", exc)
        return 1
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from edgenvr.cli.demo import run_demo

    setup_logging(args.log_level or "info", "demo")
    return run_demo(Path(args.data_dir) if args.data_dir else None, args.seconds, args.port, args.with_hub)


def cmd_check_config(args: argparse.Namespace) -> int:
    """Every problem of the file; then what `run` would meet on this machine: the data directory (writable,
    larger than min_free) and an index only a newer edgenvr can use."""
    try:
        config = load_config(args.file)
        check_data_dir(config)
        _check_index_version(config)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem)
        print(f"{len(exc.problems)} problem(s) in {args.file}", file=sys.stderr)
        return 1
    print(f"{args.file}: OK ({len(config.enabled_cameras)} of {len(config.cameras)} cameras enabled, "
          f"data in {config.storage.data_dir})")
    return 0


def _check_index_version(config: Config) -> None:
    """ConfigError if the data dir's index was written by a newer edgenvr (`run` would refuse it). A damaged
    index is not a config problem: the supervisor deals with it at start-up."""
    from edgenvr.index.queries import open_readonly

    try:
        open_readonly(StorageLayout(config.storage.data_dir)).close()
    except IndexVersionError as exc:
        raise ConfigError([f"storage.data_dir: {exc}"]) from None
    except (FileNotFoundError, sqlite3.Error):
        pass   # nothing recorded yet, or an index the start-up reconcile repairs


def _open_index(config: Config, writable: bool = False):  # type: ignore[no-untyped-def]
    """The index, read-only unless for an admin write (holds); exit 1 if nothing was ever recorded."""
    from edgenvr.index.queries import open_readonly
    from edgenvr.retention.holds import open_index

    try:
        return (open_index if writable else open_readonly)(StorageLayout(config.storage.data_dir))
    except FileNotFoundError as exc:
        print(f"edgenvr: {exc}", file=sys.stderr)
        raise SystemExit(1) from None


def cmd_segments(args: argparse.Namespace) -> int:
    from edgenvr.index.queries import segments

    config = _load(args.config)
    layout = StorageLayout(config.storage.data_dir)
    with _open_index(config) as conn:
        rows = segments(conn, layout, args.camera, args.since, args.until)
        if not args.json:
            print(f"{'camera':<16} {'start (UTC)':<24} {'end (UTC)':<24} {'seconds':>8} {'bytes':>10}  path")
        for row in rows:
            if args.json:
                print(json.dumps(asdict(row)))
            else:
                print(f"{row.camera:<16} {format_ms(row.start_ms):<24} {format_ms(row.end_ms):<24} "
                      f"{(row.end_ms - row.start_ms) / 1000:>8.1f} {row.bytes:>10}  {row.path}")
    return 0


def cmd_gaps(args: argparse.Namespace) -> int:
    from edgenvr.index.queries import gaps

    config = _load(args.config)
    with _open_index(config) as conn:
        found = gaps(conn, StorageLayout(config.storage.data_dir), args.camera, args.since, args.until)
    for gap in found:
        if args.json:
            print(json.dumps(asdict(gap)))
        else:
            length = f"{(gap.end_ms - gap.start_ms) / 1000:.1f} s" if gap.end_ms is not None else "ongoing"
            print(f"{gap.camera:<16} {format_ms(gap.start_ms):<24} {format_ms(gap.end_ms):<24} {length:>10}  {gap.reason}")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from edgenvr.index.queries import camera_states, last_video_ms, latest_reference

    config = _load(args.config)
    layout = StorageLayout(config.storage.data_dir)
    with _open_index(config) as conn:
        states = {row["id"]: row for row in camera_states(conn)}
        last_video = {camera: last_video_ms(conn, layout, camera, row["last_end_ms"]) for camera, row in states.items()}
        references = {camera.id: latest_reference(conn, camera.id) for camera in config.cameras}
        waiting = outbox.backlog(conn) if config.sync.enabled else None
    for camera in config.cameras:
        row = states.get(camera.id)
        if row is None:
            print(f"{camera.id:<16} {'never recorded':<14}")
            continue
        motion = json.loads(row["motion_json"])
        reference = references[camera.id]
        if args.json:
            print(json.dumps({"camera": camera.id, "state": row["state"], "since_ms": row["state_since_ms"],
                              "reason": row["state_reason"], "dropped": json.loads(row["dropped_json"]),
                              "last_end_ms": last_video[camera.id], "motion": motion,
                              "reference": None if reference is None else {
                                  "taken_ms": reference["approved_ms"], "image": str(layout.absolute(reference["image"])),
                                  "approved_by": None if reference["approved_by"] == COMMISSIONING
                                  else reference["approved_by"]}}))
        else:
            detection = ""
            if motion:  # the worker's last report; it stopped with the recorders
                state = RecorderState.STOPPED if row["state"] == RecorderState.STOPPED else motion["state"]
                detection = f"  detection {state} ({motion['dropped']} frames skipped)"
            print(f"{camera.id:<16} {row['state']:<14} since {format_ms(row['state_since_ms'])}  "
                  f"last video {format_ms(last_video[camera.id])}{detection}  {row['state_reason']}".rstrip())
            if camera.motion.tamper and (reference is None or reference["approved_by"] == COMMISSIONING):
                print(f"{'':<16} reference view not approved: " + (
                    "none taken yet" if reference is None else
                    f"taken automatically {format_ms(reference['approved_ms'])} ({layout.absolute(reference['image'])});"
                    f" once you have checked that the camera shows what it must watch, approve its view:"
                    f" `edgenvr reference approve --camera {camera.id}`"))
    if waiting is not None:
        if args.json:
            print(json.dumps({"sync": {"hub_url": config.sync.hub_url, "backlog": waiting.count,
                                       "backlog_bytes_built": waiting.bytes_known, "oldest_ms": waiting.oldest_ms,
                                       "last_error": waiting.last_error}}))
        else:
            oldest = f", the oldest from {format_ms(waiting.oldest_ms)}" if waiting.oldest_ms is not None else ""
            problem = f"; last problem: {waiting.last_error}" if waiting.last_error else ""
            print(f"sync to {config.sync.hub_url}: {waiting.count} clip(s) waiting{oldest}{problem}")
    time_sync = time_sync_state(SYSTEM_CLOCK)   # the kernel's word, and what timesyncd says of its NTP server
    if args.json:
        print(json.dumps({"time_sync": time_sync.to_json()}))
    else:
        print(f"clock: {time_sync.describe(format_ms)}")
    return 0


def cmd_check_index(args: argparse.Namespace) -> int:
    from edgenvr.index.reconcile import check_consistency

    config = _load(args.config)
    layout = StorageLayout(config.storage.data_dir)
    with _open_index(config) as conn:
        report = check_consistency(conn, layout)
    print(report.summary())
    for label, items in (("missing file", report.rows_without_file), ("wrong size", report.rows_with_wrong_size),
                         ("unindexed file", report.files_without_row), ("partial file", report.partial_files)):
        for item in items:
            print(f"  {label}: {item}")
    return 0 if report.consistent else 1


# -- holds and retention ---------------------------------------------------------------------------

def cmd_hold_add(args: argparse.Namespace) -> int:
    from edgenvr.retention.holds import HoldError, add_hold

    config = _load(args.config)
    conn = _open_index(config, writable=True)
    try:
        with audited(config, actor(args.by), "hold_add", camera=args.camera, from_ms=args.from_ms, to_ms=args.to_ms,
                     reason=args.reason):
            hold = add_hold(conn, config, args.camera, args.from_ms, args.to_ms, args.reason)
    except HoldError as exc:
        print(f"edgenvr: hold not added: {exc}", file=sys.stderr)
        return 2
    except sqlite3.Error as exc:  # locked for too long by a big sweep, or the disk is full
        print(f"edgenvr: hold not added, the index refused the write ({exc}); try again", file=sys.stderr)
        return 1
    finally:
        conn.close()
    print(hold.id)  # alone on stdout, for scripts; the summary goes to stderr
    print(f"edgenvr: {hold.describe()}", file=sys.stderr)
    return 0


def cmd_hold_list(args: argparse.Namespace) -> int:
    from edgenvr.retention.holds import hold_to_json, list_holds

    config = _load(args.config)
    with _open_index(config) as conn:
        holds = list_holds(conn, args.camera, include_released=args.all)
    if not args.json:
        print(f"{'id':>4} {'camera':<16} {'from (UTC)':<24} {'to (UTC)':<24} {'state':<10} {'segments':>8}"
              f" {'MB':>9}  reason")
    for hold in holds:
        if args.json:
            print(json.dumps(hold_to_json(hold)))
            continue
        state = "in force" if hold.in_force else "released"
        reason = hold.reason + (f" (released: {hold.release_reason})" if hold.release_reason else "")
        print(f"{hold.id:>4} {hold.camera:<16} {format_ms(hold.from_ms):<24} {format_ms(hold.to_ms):<24} "
              f"{state:<10} {hold.segments:>8} {hold.bytes / 1e6:>9.1f}  {reason}")
    return 0


def cmd_hold_release(args: argparse.Namespace) -> int:
    from edgenvr.retention.holds import HoldError, release_hold

    config = _load(args.config)
    conn = _open_index(config, writable=True)
    try:
        with audited(config, actor(args.by), "hold_release", reason=args.reason or "", detail=f"hold {args.id}"):
            hold = release_hold(conn, args.id, args.reason or "")
    except HoldError as exc:
        print(f"edgenvr: hold not released: {exc}", file=sys.stderr)
        return 2
    except sqlite3.Error as exc:
        print(f"edgenvr: hold not released, the index refused the write ({exc}); try again", file=sys.stderr)
        return 1
    finally:
        conn.close()
    print(f"released {hold.describe()}; its video is back under event and continuous retention")
    return 0


def cmd_retention(args: argparse.Namespace) -> int:
    from edgenvr.retention.report import build_report, format_report, report_to_json

    config = _load(args.config)
    with _open_index(config) as conn:
        report = build_report(conn, config, StorageLayout(config.storage.data_dir))
    lines = [json.dumps(obj) for obj in report_to_json(report)] if args.json else format_report(report)
    for line in lines:
        print(line)
    return 0


def _add_hold_and_retention_commands(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    hold = sub.add_parser("hold", help="keep video whatever its age: add, list, release holds")
    hold_sub = hold.add_subparsers(dest="hold_command", required=True)
    add = hold_sub.add_parser("add", help="put a camera's video from..to on hold; prints the hold id")
    add.add_argument("--config", required=True)
    add.add_argument("--camera", type=_text_arg, required=True)
    add.add_argument("--from", dest="from_ms", type=_time_arg, required=True, metavar="TIME",
                     help=f"start: {TIME_FORMS}")
    add.add_argument("--to", dest="to_ms", type=_time_arg, required=True, metavar="TIME",
                     help="end, written like --from; may be in the future")
    add.add_argument("--reason", type=_text_arg, required=True, help="why the video is kept (incident, request)")
    add.add_argument("--by", type=_text_arg, help="who holds it (default: the login name)")
    add.set_defaults(func=cmd_hold_add)
    listing = hold_sub.add_parser("list", help="holds in force (--all: released ones too)")
    listing.add_argument("--config", required=True)
    listing.add_argument("--camera", type=_text_arg)
    listing.add_argument("--all", action="store_true", help="include released holds")
    listing.add_argument("--json", action="store_true", help="one JSON object per line")
    listing.set_defaults(func=cmd_hold_list)
    release = hold_sub.add_parser("release", help="end a hold; its video goes back to normal retention")
    release.add_argument("--config", required=True)
    release.add_argument("id", type=_hold_id_arg)
    release.add_argument("--reason", type=_text_arg, help="why the hold ends (kept with the hold)")
    release.add_argument("--by", type=_text_arg, help="who releases it (default: the login name)")
    release.set_defaults(func=cmd_hold_release)

    retention = sub.add_parser("retention", help="days of video kept per camera, the next sweep, when the disk fills")
    retention.add_argument("--config", required=True)
    retention.add_argument("--json", action="store_true", help="one JSON object per camera, then one for the disk")
    retention.set_defaults(func=cmd_retention)


def cmd_events(args: argparse.Namespace) -> int:
    from edgenvr.index.queries import events

    config = _load(args.config)
    layout = StorageLayout(config.storage.data_dir)
    with _open_index(config) as conn:
        found = events(conn, layout, args.camera, args.kind, args.since, args.until)
    if not args.json:
        print(f"{'camera':<16} {'kind':<16} {'start (UTC)':<24} {'seconds':>8}  zones / detail")
    for event in found:
        if args.json:
            print(json.dumps(asdict(event)))
            continue
        kind = f"{event.kind}:{event.subkind}" if event.subkind else event.kind
        length = f"{(event.end_ms - event.start_ms) / 1000:.1f}" if event.end_ms is not None else "open"
        print(f"{event.camera:<16} {kind:<16} {format_ms(event.start_ms):<24} {length:>8}  "
              f"{', '.join(event.zones)} {event.detail}".rstrip())
    return 0


def cmd_reference_approve(args: argparse.Namespace) -> int:
    from edgenvr.detection.reference_approval import (
        ReferenceError,
        approve_current_view,
    )

    config = _load(args.config)
    try:
        camera = config.camera(args.camera)
    except KeyError:
        print(f"edgenvr: no camera {args.camera!r} in {args.config}", file=sys.stderr)
        return 2
    who = actor(args.by)
    try:
        with audited(config, who, "reference_approve", camera=camera.id):
            approved_ms, image = approve_current_view(StorageLayout(config.storage.data_dir), camera, who)
    except (ReferenceError, OSError, sqlite3.Error) as exc:
        print(f"edgenvr: reference view not approved: {exc}", file=sys.stderr)
        return 1
    print(f"camera {camera.id}: current view approved as the reference at {format_ms(approved_ms)} ({image}); "
          "a 'moved' alert closes once the motion worker loads it (within 10 s)")
    return 0


def _add_event_and_reference_commands(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    events = sub.add_parser("events", help="motion, tamper, offline and alert events")
    events.add_argument("--config", required=True)
    events.add_argument("--camera", type=_text_arg)
    events.add_argument("--kind", choices=[kind.value for kind in EventKind])
    events.add_argument("--since", type=_time_arg, metavar="TIME", help=f"from: {TIME_FORMS}")
    events.add_argument("--until", type=_time_arg, metavar="TIME", help="to, written like --since")
    events.add_argument("--json", action="store_true", help="one JSON object per line")
    events.set_defaults(func=cmd_events)

    reference = sub.add_parser("reference", help="a camera's approved reference view (moved-camera detection)")
    reference_sub = reference.add_subparsers(dest="reference_command", required=True)
    approve = reference_sub.add_parser("approve", help="approve the camera's current view as its reference")
    approve.add_argument("--config", required=True)
    approve.add_argument("--camera", type=_text_arg, required=True)
    approve.add_argument("--by", type=_text_arg, help="who approves (default: the login name)")
    approve.set_defaults(func=cmd_reference_approve)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edgenvr", description="Edge video recorder for RTSP cameras.")
    parser.add_argument("--log-level", choices=["debug", "info", "warning", "error"], default=None)
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="record every enabled camera until stopped")
    run.add_argument("--config", required=True)
    run.set_defaults(func=cmd_run)

    demo = sub.add_parser("demo", help="record a built-in test camera (no config needed)")
    demo.add_argument("--data-dir", help="where to record (default: a new temporary directory)")
    demo.add_argument("--seconds", type=_seconds_arg, default=None, help="stop after this long (default: until Ctrl-C)")
    demo.add_argument("--port", type=int, default=8443, help="the web UI's port (default: 8443)")
    demo.add_argument("--with-hub", nargs="?", type=int, const=9443, default=None, metavar="PORT",
                      help="also run a city hub on this machine (on PORT, default 9443) that the box syncs to")
    demo.set_defaults(func=cmd_demo)

    check = sub.add_parser("check-config", help="validate a config file and print every problem")
    check.add_argument("file")
    check.set_defaults(func=cmd_check_config)

    for name, func, text in (("segments", cmd_segments, "list recorded segments"),
                             ("gaps", cmd_gaps, "list where recording was missing")):
        p = sub.add_parser(name, help=text)
        p.add_argument("--config", required=True)
        p.add_argument("--camera", type=_text_arg)
        p.add_argument("--since", type=_time_arg, metavar="TIME", help=f"from: {TIME_FORMS}")
        p.add_argument("--until", type=_time_arg, metavar="TIME", help="to, written like --since")
        p.add_argument("--json", action="store_true", help="one JSON object per line")
        p.set_defaults(func=func)

    status = sub.add_parser("status", help="what each camera's recorder is doing (as last indexed), the sync "
                                           "backlog, and whether the clock is synchronised (NTP)")
    status.add_argument("--config", required=True)
    status.add_argument("--json", action="store_true")
    status.set_defaults(func=cmd_status)

    check_index = sub.add_parser("check-index", help="compare index and disk; exit 1 if they disagree")
    check_index.add_argument("--config", required=True)
    check_index.set_defaults(func=cmd_check_index)

    _add_hold_and_retention_commands(sub)
    _add_event_and_reference_commands(sub)
    add_evidence_commands(sub, _load, _time_arg, _text_arg, TIME_FORMS)
    add_user_commands(sub, _load, _text_arg)
    add_hub_commands(sub, _time_arg, _text_arg, TIME_FORMS)
    add_appliance_commands(sub, _load)
    add_discover_command(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    if isinstance(sys.stdout, io.TextIOWrapper):
        # A path may hold bytes the locale cannot decode (kept as surrogates): printed escaped, not a traceback.
        sys.stdout.reconfigure(errors="backslashreplace")
    args = build_parser().parse_args(argv)
    _refuse_reversed_ranges(args)
    try:
        return int(args.func(args) or 0)
    except BrokenPipeError:
        # Output piped into `head` or a pager that quit: not an error of edgenvr's. Stdout is pointed at
        # /dev/null so the interpreter's own flush at exit does not fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except sqlite3.Error as exc:
        # An index it cannot use: permissions, a lock held too long, a damaged file, or one a newer edgenvr
        # wrote (index.schema.IndexVersionError, whose message says so).
        print(f"edgenvr: the index cannot be used: {exc}", file=sys.stderr)
        return 1
