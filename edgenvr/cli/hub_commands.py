"""`edgenvr hub`: the city hub. `edgenvr hub --config HUB.toml` serves; `enrol` prints a box's one-time
enrolment token; `revoke` stops trusting a box; `clips` lists received clips; `fetch` writes a clip's evidence
folder, which `edgenvr verify` accepts.

Failure paths: a bad config -> its problems, exit 2; an unknown box or clip -> a message, exit 1; the
database unusable -> its error, exit 1; a fetch target that exists and is not empty -> refused, exit 1 (a
clip is never unpacked over other files).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
import zipfile
from pathlib import Path

import sqlalchemy as sa

from edgenvr.core.clock import SYSTEM_CLOCK
from edgenvr.core.process_setup import setup_logging
from edgenvr.core.time_format import format_ms
from edgenvr.hub import hub_database
from edgenvr.hub.box_enrolment import create_enrolment, revoke_box
from edgenvr.hub.clip_intake import checked_entries
from edgenvr.hub.hub_config import HubConfig, HubConfigError, load_hub_config
from edgenvr.hub.hub_database import CLIPS
from edgenvr.hub.tus_uploads import UPLOAD_ID, UploadRejected


def _config(args: argparse.Namespace) -> HubConfig:
    if not getattr(args, "config", None):
        print("edgenvr hub: --config HUB.toml is required", file=sys.stderr)
        raise SystemExit(2)
    try:
        return load_hub_config(args.config)
    except HubConfigError as exc:
        print(f"edgenvr hub: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def _engine(config: HubConfig) -> sa.Engine:
    return hub_database.connect(hub_database.database_url(config.data_dir, config.database_url))


def cmd_hub_serve(args: argparse.Namespace) -> int:
    # the server's imports (aiohttp, TLS) only when serving
    from edgenvr.hub.hub_server import serve_hub
    from edgenvr.web.tls_certificate import CertificateError
    config = _config(args)
    setup_logging(args.log_level or "info", "hub")
    try:
        asyncio.run(serve_hub(config))
    except (OSError, CertificateError, sa.exc.SQLAlchemyError) as exc:
        print(f"edgenvr hub: cannot serve on {config.host}:{config.port}: {exc}", file=sys.stderr)
        return 1
    return 0


def cmd_hub_enrol(args: argparse.Namespace) -> int:
    config = _config(args)
    try:
        token = create_enrolment(_engine(config), args.box, args.site, SYSTEM_CLOCK)
    except ValueError as exc:
        print(f"edgenvr hub enrol: {exc}", file=sys.stderr)
        return 2
    print(token)
    print(f"(one-time enrolment token for box {args.box} at {args.site}: put it in that box's [sync] "
          "enrolment_token; it is shown only now)", file=sys.stderr)
    return 0


def cmd_hub_revoke(args: argparse.Namespace) -> int:
    if not revoke_box(_engine(_config(args)), args.box, SYSTEM_CLOCK):
        print(f"edgenvr hub revoke: no enrolled box {args.box!r}", file=sys.stderr)
        return 1
    print(f"box {args.box} revoked: nothing it signs is accepted any more")
    return 0


def cmd_hub_clips(args: argparse.Namespace) -> int:
    query = sa.select(CLIPS).order_by(CLIPS.c.start_ms, CLIPS.c.box, CLIPS.c.camera)
    if args.box:
        query = query.where(CLIPS.c.box == args.box)
    with _engine(_config(args)).connect() as conn:
        rows = conn.execute(query).all()
    for row in rows:
        clip = {"id": row.id, "box": row.box, "camera": row.camera, "start_ms": row.start_ms, "end_ms": row.end_ms,
                "kind": row.kind, "sha256": row.sha256, "bytes": row.bytes, "received_ms": row.received_ms}
        if args.json:
            print(json.dumps(clip))
        else:
            print(f"{row.id}  {row.box}/{row.camera}  {format_ms(row.start_ms)} .. {format_ms(row.end_ms)}  "
                  f"{row.kind}  {row.bytes} bytes")
    return 0


def cmd_hub_fetch(args: argparse.Namespace) -> int:
    config = _config(args)
    if not UPLOAD_ID.fullmatch(args.clip):
        print(f"edgenvr hub fetch: {args.clip!r} is not a clip id", file=sys.stderr)
        return 1
    with _engine(config).connect() as conn:
        found = conn.execute(sa.select(CLIPS.c.id).where(CLIPS.c.id == args.clip)).first()
    if found is None:
        print(f"edgenvr hub fetch: no clip {args.clip}", file=sys.stderr)
        return 1
    out = Path(args.out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        print(f"edgenvr hub fetch: {out} exists and is not an empty folder", file=sys.stderr)
        return 1
    out.mkdir(parents=True, exist_ok=True)
    stored = config.clips_dir / f"{args.clip}.zip"
    with zipfile.ZipFile(stored) as archive:
        try:   # checked at intake; checked again, never trusted
            entries = checked_entries(archive, stored.stat().st_size)
        except UploadRejected as exc:
            print(f"edgenvr hub fetch: clip {args.clip}: {exc}", file=sys.stderr)
            return 1
        for entry in entries:
            with archive.open(entry) as source, open(out / entry.filename, "xb") as target:
                shutil.copyfileobj(source, target, 1024 * 1024)
    print(f"clip {args.clip} written to {out}; check it with: edgenvr verify {out}")
    return 0


def add_hub_commands(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    hub = sub.add_parser("hub", help="the city hub: serve (with --config alone), enrol and revoke boxes, clips")
    hub.add_argument("--config", help="the hub's config file (HUB.toml)")
    hub.set_defaults(func=cmd_hub_serve)
    hub_sub = hub.add_subparsers(dest="hub_command")

    def command(name: str, text: str, func: object) -> argparse.ArgumentParser:
        parser = hub_sub.add_parser(name, help=text)
        parser.add_argument("--config", default=argparse.SUPPRESS, help="the hub's config file (HUB.toml)")
        parser.set_defaults(func=func)
        return parser

    enrol = command("enrol", "print a one-time enrolment token for a box", cmd_hub_enrol)
    enrol.add_argument("--box", required=True, help="the box's [box] id")
    enrol.add_argument("--site", required=True, help="where it is (shown in the fleet view)")
    revoke = command("revoke", "refuse everything a box signs from now on", cmd_hub_revoke)
    revoke.add_argument("--box", required=True)
    clips = command("clips", "list received clips", cmd_hub_clips)
    clips.add_argument("--box")
    clips.add_argument("--json", action="store_true", help="one JSON object per line")
    fetch = command("fetch", "write a clip's evidence folder (check it with `edgenvr verify DIR`)", cmd_hub_fetch)
    fetch.add_argument("clip", help="the clip id (from `edgenvr hub clips`)")
    fetch.add_argument("--out", required=True, help="an empty or new folder")
