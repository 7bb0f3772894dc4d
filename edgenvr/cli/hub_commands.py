"""The `edgenvr hub` commands (their arguments: cli.hub_command_line): the city hub. `edgenvr hub --config
HUB.toml` serves; `migrate` creates or upgrades its database tables; `enrol` prints a box's one-time enrolment
token; `revoke` stops trusting a box; `clips` lists received clips; `fetch` writes a clip's evidence folder,
which `edgenvr verify` accepts; `pull` asks a box for a range and `pulls` shows how requests stand; `boxes` is
the fleet view; `lost` lists clips boxes lost before they could send them.

Failure paths: a bad config -> its problems, exit 2; an unknown box or clip, or a pull breaking a rule -> a
message, exit 1; the database unusable (or changed by a newer edgenvr) -> its error, exit 1; a fetch target
that exists and is not empty -> refused, exit 1 (a clip is never unpacked over other files).
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import shutil
import sys
import time
import zipfile
from dataclasses import asdict
from pathlib import Path

import sqlalchemy as sa

from edgenvr.cli.evidence_commands import audited_by
from edgenvr.cli.hub_command_line import hub_config_of
from edgenvr.core.clock import SYSTEM_CLOCK
from edgenvr.core.process_setup import setup_logging
from edgenvr.core.time_format import format_ms
from edgenvr.core.units import MINUTE_MS
from edgenvr.hub import hub_database
from edgenvr.hub.box_enrolment import create_enrolment, revoke_box
from edgenvr.hub.clip_intake import checked_entries
from edgenvr.hub.fleet import fleet
from edgenvr.hub.hub_accounts import audit_camera, open_hub_audit
from edgenvr.hub.hub_config import HubConfig
from edgenvr.hub.hub_database import CLIPS
from edgenvr.hub.lost_clips import lost_clips
from edgenvr.hub.remote_pulls import PullRefused, pulls, request_pull
from edgenvr.hub.tus_uploads import UPLOAD_ID, UploadRejected
from edgenvr.sync.hub_protocol import PullState


def _engine(config: HubConfig) -> sa.Engine:
    return hub_database.connect(hub_database.database_url(config.data_dir, config.database_url))


def cmd_hub_serve(args: argparse.Namespace) -> int:
    # the server's imports (aiohttp, TLS) only when serving
    from edgenvr.hub.hub_server import serve_hub
    from edgenvr.web.tls_certificate import CertificateError
    config = hub_config_of(args)
    setup_logging(args.log_level or "info", "hub")
    try:
        if config.workers > 1:   # gunicorn's master, forking the workers (not inside an event loop)
            from edgenvr.hub.hub_workers import serve_hub_workers
            return serve_hub_workers(config, args.log_level or "info")
        asyncio.run(serve_hub(config))
    except (OSError, CertificateError, sa.exc.SQLAlchemyError) as exc:
        print(f"edgenvr hub: cannot serve on {config.host}:{config.port}: {exc}", file=sys.stderr)
        return 1
    return 0


def cmd_hub_migrate(args: argparse.Namespace) -> int:
    """Create the hub's missing tables and bring the database to this edgenvr's version (hub_database.connect: on
    PostgreSQL under an advisory lock, so workers starting at the same time are harmless), waiting up to --wait
    seconds for a database that is still starting (systemd/edgenvr-hub-migrate.service runs it before the hub).
    A database a newer edgenvr changed is refused, untouched (exit 1)."""
    config = hub_config_of(args)
    deadline = time.monotonic() + args.wait   # real time: this waits for another program, the database
    while True:
        try:
            engine = _engine(config)
            break
        except sa.exc.OperationalError as exc:   # not reachable (yet), or refusing: tried again until the deadline
            if time.monotonic() >= deadline:
                print(f"edgenvr hub migrate: the database cannot be used: {exc.orig or exc}", file=sys.stderr)
                return 1
            time.sleep(2)
        except sa.exc.SQLAlchemyError as exc:
            print(f"edgenvr hub migrate: {exc}", file=sys.stderr)
            return 1
    tables = sa.inspect(engine).get_table_names()
    engine.dispose()
    print(f"hub database ready ({engine.dialect.name}): {len(tables)} tables, version {hub_database.SCHEMA_VERSION}")
    return 0


def cmd_hub_enrol(args: argparse.Namespace) -> int:
    config = hub_config_of(args)
    try:
        token = create_enrolment(_engine(config), args.box, args.site, SYSTEM_CLOCK)
    except ValueError as exc:
        print(f"edgenvr hub enrol: {exc}", file=sys.stderr)
        return 2
    print(token)
    print(f"(one-time enrolment token for box {args.box} at {args.site}, shown only now. In that box's config:\n"
          f"{sync_table(config, token)})", file=sys.stderr)
    return 0


def sync_table(config: HubConfig, token: str) -> str:
    """The [sync] table a box needs to reach this hub: its URL (the listening address, or a placeholder when
    it listens on every address), the token, and the pin of its certificate when it serves TLS itself."""
    from edgenvr.web.tls_certificate import (
        CertificateError,
        certificate_at,
        fingerprint,
    )
    host = "THIS-HUB'S-ADDRESS" if config.host in ("0.0.0.0", "::", "") else config.host
    lines = ["[sync]", f'hub_url = "{"https" if config.tls else "http"}://{host}:{config.port}"',
             f'enrolment_token = "{token}"']
    if config.tls:   # the hub's own certificate, which the box pins (made by the hub's first start, not here:
        try:         # a file made by whoever runs this command might be unreadable to the hub's service user)
            lines.append(f'hub_fingerprint = "{fingerprint(certificate_at(config.tls_certificate_path))}"')
        except CertificateError:
            lines.append("# hub_fingerprint: start the hub once (it makes its certificate), then enrol the box again")
    return "\n".join(lines)


def cmd_hub_revoke(args: argparse.Namespace) -> int:
    if not revoke_box(_engine(hub_config_of(args)), args.box, SYSTEM_CLOCK):
        print(f"edgenvr hub revoke: no enrolled box {args.box!r}", file=sys.stderr)
        return 1
    print(f"box {args.box} revoked: nothing it signs is accepted any more")
    return 0


def cmd_hub_clips(args: argparse.Namespace) -> int:
    query = sa.select(CLIPS).order_by(CLIPS.c.start_ms, CLIPS.c.box, CLIPS.c.camera)
    if args.box:
        query = query.where(CLIPS.c.box == args.box)
    with _engine(hub_config_of(args)).connect() as conn:
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
    config = hub_config_of(args)
    if not UPLOAD_ID.fullmatch(args.clip):
        print(f"edgenvr hub fetch: {args.clip!r} is not a clip id", file=sys.stderr)
        return 1
    with _engine(config).connect() as conn:
        found = conn.execute(sa.select(CLIPS).where(CLIPS.c.id == args.clip)).first()
    if found is None:
        print(f"edgenvr hub fetch: no clip {args.clip}", file=sys.stderr)
        return 1
    out = Path(args.out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        print(f"edgenvr hub fetch: {out} exists and is not an empty folder", file=sys.stderr)
        return 1
    out.mkdir(parents=True, exist_ok=True)
    stored = config.clips_dir / f"{args.clip}.zip"
    with audited_by(lambda: open_hub_audit(config), f"cli:{getpass.getuser()}", "export",
                    camera=audit_camera(found.box, found.camera), from_ms=found.start_ms, to_ms=found.end_ms,
                    detail=f"clip {args.clip} written to {out}"), zipfile.ZipFile(stored) as archive:
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


def cmd_hub_pull(args: argparse.Namespace) -> int:
    config = hub_config_of(args)
    who = f"cli:{getpass.getuser()}"
    span = {"from_ms": args.from_ms, "to_ms": args.to_ms} if args.from_ms < args.to_ms else {}   # else refused
    try:
        with audited_by(lambda: open_hub_audit(config), who, "pull_request", reason=args.reason,
                        camera=audit_camera(args.box, args.camera), detail=f"asked box {args.box} for it", **span):
            pull = request_pull(_engine(config), args.box, args.camera, args.from_ms, args.to_ms, args.reason, who,
                                SYSTEM_CLOCK)
    except PullRefused as exc:
        print(f"edgenvr hub pull: {exc}", file=sys.stderr)
        return 1
    print(pull.id)
    print(f"(pull of {args.camera} on box {args.box} queued: the box gets it when its channel is open; follow it "
          "with `edgenvr hub pulls`)", file=sys.stderr)
    return 0


def cmd_hub_pulls(args: argparse.Namespace) -> int:
    for pull in pulls(_engine(hub_config_of(args)), args.box):
        if args.json:
            print(json.dumps({"id": pull.id, "box": pull.box, "camera": pull.camera, "start_ms": pull.start_ms,
                              "end_ms": pull.end_ms, "state": pull.state, "progress": pull.progress,
                              "detail": pull.detail, "clip_id": pull.clip_id, "reason": pull.reason,
                              "requested_by": pull.requested_by, "created_ms": pull.created_ms,
                              "updated_ms": pull.updated_ms}))
        else:
            state = f"{pull.state} {pull.progress}%" if pull.state == PullState.UPLOADING else str(pull.state)
            answer = f"clip {pull.clip_id}" if pull.clip_id else pull.detail
            print(f"{pull.id}  {pull.box}/{pull.camera}  {format_ms(pull.start_ms)} .. {format_ms(pull.end_ms)}  "
                  f"{state}  {answer}".rstrip())
    return 0


def cmd_hub_boxes(args: argparse.Namespace) -> int:
    for health in fleet(_engine(hub_config_of(args)), SYSTEM_CLOCK.now_ms(), int(args.silent_minutes * MINUTE_MS)):
        if args.json:
            print(json.dumps(asdict(health)))
            continue
        flags = [flag for flag, on in (("SILENT", health.silent), ("REVOKED", health.revoked)) if on]
        flags += [f"OFFLINE {camera}" for camera in health.cameras_offline]
        flags += [f"TAMPER {t['camera']} ({t['subkind']})" for t in health.tamper]
        flags += [f"LOST {health.lost_clips} clip(s)"] if health.lost_clips else []
        flags += [f"AUDIT: {health.audit_problem}"] if health.audit_problem else []
        disk = f"disk {health.disk_free_percent}% free" if health.disk_free_percent is not None else ""
        print(f"{health.box:<24} {health.site[:30]:<30} last report {format_ms(health.last_report_ms)}  "
              f"{len(health.cameras)} camera(s)  backlog {health.backlog}  {disk}  {' '.join(flags)}".rstrip())
    return 0


def cmd_hub_lost(args: argparse.Namespace) -> int:
    for loss in lost_clips(_engine(hub_config_of(args)), args.box):
        if args.json:
            print(json.dumps(asdict(loss)))
        else:
            print(f"{loss.box}/{loss.camera}  {format_ms(loss.start_ms)} .. {format_ms(loss.end_ms)}  {loss.kind}  "
                  f"lost {format_ms(loss.lost_ms)}: {loss.reason}")
    return 0
