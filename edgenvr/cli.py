"""The `edgenvr` command line: run, demo, check-config, segments, gaps, status, check-index."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import asdict
from pathlib import Path

from edgenvr.config import Config, ConfigError, load_config
from edgenvr.process_setup import setup_logging
from edgenvr.storage_layout import StorageLayout
from edgenvr.timebase import format_ms, parse_time_ms

log = logging.getLogger("edgenvr")


def _time_arg(text: str) -> int:
    try:
        return parse_time_ms(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _load(path: str) -> Config:
    try:
        return load_config(path)
    except ConfigError as exc:
        print(f"edgenvr: invalid config {path}:", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        raise SystemExit(2) from None


def cmd_run(args: argparse.Namespace) -> int:
    from edgenvr.supervisor import SupervisorError, run_supervisor

    config = _load(args.config)
    setup_logging(args.log_level or config.log_level, "supervisor")
    try:
        run_supervisor(config)
    except SupervisorError as exc:
        log.error("%s", exc)
        return 1
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from edgenvr.demo import run_demo

    setup_logging(args.log_level or "info", "demo")
    return run_demo(Path(args.data_dir) if args.data_dir else None, args.seconds)


def cmd_check_config(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.file)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem)
        print(f"{len(exc.problems)} problem(s) in {args.file}", file=sys.stderr)
        return 1
    print(f"{args.file}: OK ({len(config.enabled_cameras)} of {len(config.cameras)} cameras enabled, "
          f"data in {config.storage.data_dir})")
    return 0


def _open_index(config: Config):  # type: ignore[no-untyped-def]
    from edgenvr.index_queries import open_readonly

    try:
        return open_readonly(StorageLayout(config.storage.data_dir))
    except FileNotFoundError as exc:
        print(f"edgenvr: {exc}", file=sys.stderr)
        raise SystemExit(1) from None


def cmd_segments(args: argparse.Namespace) -> int:
    from edgenvr.index_queries import segments

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
    from edgenvr.index_queries import gaps

    config = _load(args.config)
    with _open_index(config) as conn:
        found = gaps(conn, args.camera, args.since, args.until)
    for gap in found:
        if args.json:
            print(json.dumps(asdict(gap)))
        else:
            length = f"{(gap.end_ms - gap.start_ms) / 1000:.1f} s" if gap.end_ms is not None else "ongoing"
            print(f"{gap.camera:<16} {format_ms(gap.start_ms):<24} {format_ms(gap.end_ms):<24} {length:>10}  {gap.reason}")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from edgenvr.index_queries import camera_states

    config = _load(args.config)
    with _open_index(config) as conn:
        states = {row["id"]: row for row in camera_states(conn)}
    for camera in config.cameras:
        row = states.get(camera.id)
        if row is None:
            print(f"{camera.id:<16} {'never recorded':<14}")
            continue
        if args.json:
            print(json.dumps({"camera": camera.id, "state": row["state"], "since_ms": row["state_since_ms"],
                              "reason": row["state_reason"], "dropped": json.loads(row["dropped_json"]),
                              "last_end_ms": row["last_end_ms"]}))
        else:
            print(f"{camera.id:<16} {row['state']:<14} since {format_ms(row['state_since_ms'])}  "
                  f"last video {format_ms(row['last_end_ms'])}  {row['state_reason']}")
    return 0


def cmd_check_index(args: argparse.Namespace) -> int:
    from edgenvr.index_reconcile import check_consistency

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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edgenvr", description="Edge video recorder for RTSP cameras.")
    parser.add_argument("--log-level", choices=["debug", "info", "warning", "error"], default=None)
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="record every enabled camera until stopped")
    run.add_argument("--config", required=True)
    run.set_defaults(func=cmd_run)

    demo = sub.add_parser("demo", help="record a built-in test camera (no config needed)")
    demo.add_argument("--data-dir", help="where to record (default: a new temporary directory)")
    demo.add_argument("--seconds", type=float, default=None, help="stop after this long (default: until Ctrl-C)")
    demo.set_defaults(func=cmd_demo)

    check = sub.add_parser("check-config", help="validate a config file and print every problem")
    check.add_argument("file")
    check.set_defaults(func=cmd_check_config)

    for name, func, text in (("segments", cmd_segments, "list recorded segments"),
                             ("gaps", cmd_gaps, "list where recording was missing")):
        p = sub.add_parser(name, help=text)
        p.add_argument("--config", required=True)
        p.add_argument("--camera")
        p.add_argument("--since", type=_time_arg, help="epoch ms/s or ISO 8601 (UTC if no zone)")
        p.add_argument("--until", type=_time_arg)
        p.add_argument("--json", action="store_true", help="one JSON object per line")
        p.set_defaults(func=func)

    status = sub.add_parser("status", help="what each camera's recorder is doing (as last indexed)")
    status.add_argument("--config", required=True)
    status.add_argument("--json", action="store_true")
    status.set_defaults(func=cmd_status)

    check_index = sub.add_parser("check-index", help="compare index and disk; exit 1 if they disagree")
    check_index.add_argument("--config", required=True)
    check_index.set_defaults(func=cmd_check_index)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)
