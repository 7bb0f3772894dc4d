"""The evidence commands: `edgenvr identity`, `export`, `report` (the signed continuity report), `verify` (an
export folder or a report) and `audit` (list, verify), and the audit record every footage action on the
command line writes first (`audited`).

An action and its audit record: the record is appended before the action, so an audit trail that cannot be
written stops the action (exit 1, nothing done); an action that then fails gets a second record saying so.
"""

from __future__ import annotations

import argparse
import getpass
import json
import sqlite3
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator, TypeVar

from edgenvr.config.records import Config
from edgenvr.core.time_format import format_ms
from edgenvr.storage.layout import StorageLayout

if TYPE_CHECKING:
    from edgenvr.evidence.audit import AuditTrail

Loader = Callable[[str], Config]
T = TypeVar("T")
AUDIT_UNWRITABLE = ("the audit trail cannot be written (if it was tampered with, `edgenvr audit verify` names"
                    " the record; a new trail starts when the file is moved aside)")


def actor(by: str | None) -> str:
    """Who acts: --by, else the login name."""
    return by if by else getpass.getuser()


@contextmanager
def audited(config: Config, who: str, action: str, **fields: object) -> Iterator[None]:
    """Append the action's audit record to the box's trail, then run the body (see `audited_by`)."""
    with audited_by(lambda: _open_audit(config), who, action, **fields):
        yield


@contextmanager
def audited_by(open_trail: Callable[[], AuditTrail], who: str, action: str, **fields: object) -> Iterator[None]:
    """Append the action's audit record to the trail `open_trail` opens (the box's, or the city hub's), then run
    the body; a failing body appends a record of the failure. An audit trail that cannot be written: message
    and exit 1 before the body runs."""
    from edgenvr.evidence.audit import AuditAction, AuditError
    from edgenvr.evidence.identity import IdentityError

    try:
        trail = open_trail()
    except (AuditError, IdentityError, OSError, sqlite3.Error) as exc:
        print(f"edgenvr: not done: {AUDIT_UNWRITABLE} ({exc})", file=sys.stderr)
        raise SystemExit(1) from None
    try:
        try:
            trail.append(who, AuditAction(action), **fields)  # type: ignore[arg-type]
        except (AuditError, OSError, sqlite3.Error) as exc:
            print(f"edgenvr: not done: {AUDIT_UNWRITABLE} ({exc})", file=sys.stderr)
            raise SystemExit(1) from None
        try:
            yield
        except BaseException as exc:
            if not (isinstance(exc, SystemExit) and exc.code == 0):
                try:
                    trail.append(who, AuditAction(action), **{**fields, "detail": f"failed: {exc}"})  # type: ignore[arg-type]
                except (AuditError, OSError, sqlite3.Error):
                    pass   # the attempt is on record; the failure is on the terminal
            raise
    finally:
        trail.close()


def _identity(config: Config):  # type: ignore[no-untyped-def]
    from edgenvr.evidence.identity import device_identity

    return device_identity(StorageLayout(config.storage.data_dir), config.box.box_id, config.box.box_name)


def _open_audit(config: Config):  # type: ignore[no-untyped-def]
    from edgenvr.evidence.audit import AuditTrail

    return AuditTrail(StorageLayout(config.storage.data_dir), _identity(config))


# -- commands ----------------------------------------------------------------------------------------

def cmd_identity(args: argparse.Namespace, load: Loader) -> int:
    from edgenvr.evidence.identity import IdentityError

    config = load(args.config)
    try:
        identity = _identity(config)
    except (IdentityError, OSError) as exc:
        print(f"edgenvr: {exc}", file=sys.stderr)
        return 1
    print(f"box {identity.box_id} ({identity.box_name})")
    print(f"key fingerprint (SHA-256 of the Ed25519 public key): {identity.fingerprint}")
    if config.web.enabled and config.web.tls:
        print(f"web certificate (SHA-256, as browsers show it): {_web_fingerprint(config)}")
    print(identity.public_pem.decode(), end="")
    return 0


def _web_fingerprint(config: Config) -> str:
    """The web server's certificate fingerprint; it is made at the web server's first start."""
    from edgenvr.web.tls_certificate import (
        CertificateError,
        fingerprint,
        read_certificate,
    )

    layout = StorageLayout(config.storage.data_dir)
    if not layout.web_tls_certificate_path.exists():
        return "not made yet (it is made when `edgenvr run` first starts the web server)"
    try:
        return fingerprint(read_certificate(layout))
    except CertificateError as exc:
        return f"unreadable: {exc}"


def cmd_export(args: argparse.Namespace, load: Loader) -> int:
    from edgenvr.evidence.audit import AuditError
    from edgenvr.evidence.bundle import ExportError, ExportRequest, export_clip
    from edgenvr.evidence.clip_builder import ClipError
    from edgenvr.evidence.identity import IdentityError

    config = load(args.config)
    who = actor(args.by)
    request = ExportRequest(args.camera, args.from_ms, args.to_ms, Path(args.out), args.reason, who,
                            allow_altered=args.allow_altered)
    if args.hold:
        _hold(config, who, args.camera, args.from_ms, args.to_ms, args.reason)
    try:
        clip, manifest = _signing(config, lambda conn, layout, identity, trail: export_clip(
            conn, config, layout, identity, trail, request, progress=_progress_bar()))
    except (ClipError, ExportError) as exc:
        print(f"\nedgenvr: not exported: {exc}", file=sys.stderr)
        return 1
    except (AuditError, IdentityError) as exc:
        print(f"\nedgenvr: not exported: {AUDIT_UNWRITABLE}, or the box's key cannot be used ({exc})",
              file=sys.stderr)
        return 1
    except OSError as exc:   # also no index yet
        print(f"\nedgenvr: not exported: {exc}", file=sys.stderr)
        return 1
    print(f"exported {args.camera} {format_ms(clip.start_ms)} - {format_ms(clip.end_ms)}: {len(clip.files)} video"
          f" file(s), {len(clip.gaps)} gap(s), to {request.out_dir}")
    if manifest["altered_sources"]:
        print(f"edgenvr: WARNING: {manifest['altered_sources']} source segment(s) were altered since recording;"
              " the manifest says which", file=sys.stderr)
    return 0


def _signing(config: Config, work: Callable[..., T]) -> T:
    """`work(conn, layout, identity, trail)` on the index (read-only), the box's key and its audit trail, all
    closed after. Raises what opening them raises (OSError: no index; IdentityError, AuditError) and what
    `work` raises."""
    from edgenvr.index.queries import open_readonly

    layout = StorageLayout(config.storage.data_dir)
    conn = open_readonly(layout)
    try:
        identity = _identity(config)
        trail = _open_audit(config)
        try:
            return work(conn, layout, identity, trail)
        finally:
            trail.close()
    finally:
        conn.close()


def _hold(config: Config, who: str, camera: str, from_ms: int, to_ms: int, reason: str) -> None:
    from edgenvr.retention.holds import HoldError, add_hold, open_index

    with audited(config, who, "hold_add", camera=camera, from_ms=from_ms, to_ms=to_ms, reason=reason,
                 detail="with an export"):
        conn = open_index(StorageLayout(config.storage.data_dir))
        try:
            hold = add_hold(conn, config, camera, from_ms, to_ms, reason)
        except HoldError as exc:
            print(f"edgenvr: not exported: the hold was refused: {exc}", file=sys.stderr)
            raise SystemExit(2) from None
        finally:
            conn.close()
    print(f"edgenvr: {hold.describe()}", file=sys.stderr)


def _progress_bar() -> Callable[[int, int], None] | None:
    """A bar on stderr when it is a terminal; nothing otherwise (logs and scripts)."""
    if not sys.stderr.isatty():
        return None

    def show(done: int, total: int) -> None:
        share = done / total if total else 1.0
        print(f"\r[{'#' * int(share * 40):<40}] {share:4.0%} {done / 1e6:,.0f} of {total / 1e6:,.0f} MB",
              end="", file=sys.stderr, flush=True)

    return show


def cmd_report(args: argparse.Namespace, load: Loader) -> int:
    """`edgenvr report`: bad input (range over MAX_RANGE_DAYS, unknown camera, --out not .html/.json or
    existing) exits 2; an --out that cannot be written, an index, key or audit trail that cannot be used exit 1."""
    from edgenvr.evidence.audit import AuditError
    from edgenvr.evidence.continuity_report import (
        ReportError,
        ReportRequest,
        check_range,
        make_report,
        output_files,
    )
    from edgenvr.evidence.identity import IdentityError

    request = ReportRequest(args.from_ms, args.to_ms, Path(args.out), args.camera, actor(args.by), args.reason)
    try:   # before the config and the index are read
        check_range(request.from_ms, request.to_ms)
        output_files(request.out)
    except ReportError as exc:
        print(f"edgenvr: report not written: {exc}", file=sys.stderr)
        return 2
    config = load(args.config)
    try:
        written, signer = _signing(config, lambda conn, layout, identity, trail: (
            make_report(conn, config, layout, identity, trail, request), identity.fingerprint))
    except ReportError as exc:
        print(f"edgenvr: report not written: {exc}", file=sys.stderr)
        return 2
    except (AuditError, IdentityError) as exc:
        print(f"edgenvr: report not written: {AUDIT_UNWRITABLE}, or the box's key cannot be used ({exc})",
              file=sys.stderr)
        return 1
    except OSError as exc:   # also no index yet
        problem = f"{exc.filename}: {exc.strerror}" if exc.filename else str(exc)
        print(f"edgenvr: report not written: {problem}", file=sys.stderr)
        return 1
    for camera in written.document["cameras"]:
        totals = camera["totals"]
        gaps = sum(gap["cause"] != "jitter" for gap in camera["gaps"])
        print(f"{camera['id']:<16} {totals['recorded_percent']:>6}% recorded, {gaps} gap(s),"
              f" {sum(e['kind'] == 'offline' for e in camera['events'])} offline,"
              f" {sum(e['kind'] == 'tamper' for e in camera['events'])} tamper event(s)")
    print(f"report signed by key {signer}: {', '.join(str(path) for path in written.files)}")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from edgenvr.evidence.continuity_report_verification import is_report
    from edgenvr.evidence.verification import VerificationFailed, verify_export

    target = Path(args.folder)
    if not target.is_dir() and is_report(target):
        return _verify_report(target, args.pubkey)
    try:
        key = Path(args.pubkey).read_bytes() if args.pubkey else None
        verified = verify_export(target, key)
    except OSError as exc:
        print(f"edgenvr: NOT VERIFIED: {exc}", file=sys.stderr)
        return 1
    except VerificationFailed as exc:
        print(f"edgenvr: NOT VERIFIED: {exc}", file=sys.stderr)
        return 1
    print(f"OK: camera {verified.camera}, {verified.start} - {verified.end}, {verified.files} video file(s),"
          f" signed by key {verified.fingerprint}" + ("" if args.pubkey else
                                                      " (compare it with the box's: `edgenvr identity`)"))
    return 0


def _verify_report(path: Path, pubkey: str | None) -> int:
    from edgenvr.evidence.continuity_report_verification import verify_report
    from edgenvr.evidence.verification import VerificationFailed

    try:
        key = Path(pubkey).read_bytes() if pubkey else None
        verified = verify_report(path, key)
    except OSError as exc:
        print(f"edgenvr: NOT VERIFIED: {exc}", file=sys.stderr)
        return 1
    except VerificationFailed as exc:
        print(f"edgenvr: NOT VERIFIED: {exc}", file=sys.stderr)
        return 1
    page = " (the page's text is the signed report's)" if verified.page_checked else ""
    print(f"OK: continuity report of box {verified.box_id}, {format_ms(verified.from_ms)} -"
          f" {format_ms(verified.to_ms)}, camera(s) {', '.join(verified.cameras)}{page}, signed by key"
          f" {verified.fingerprint}" + ("" if pubkey else " (compare it with the box's: `edgenvr identity`)"))
    return 0


def cmd_audit(args: argparse.Namespace, load: Loader) -> int:
    if args.config is None:
        print("edgenvr: audit: --config FILE is needed", file=sys.stderr)
        return 2
    layout = StorageLayout(load(args.config).storage.data_dir)
    return show_audit(args, layout, layout.device_public_key_path)


def show_audit(args: argparse.Namespace, layout: StorageLayout, public_key_path: Path) -> int:
    """`audit [list]` and `audit verify` of the trail in `layout`, signed by the key at `public_key_path` (the
    box's device.pub, or the city hub's hub.pub)."""
    from edgenvr.evidence.audit import read_records, verify_trail
    from edgenvr.evidence.identity import load_public_key

    if not layout.audit_path.exists():
        print(f"edgenvr: no audit trail at {layout.audit_path}: nothing was exported, held or approved yet",
              file=sys.stderr)
        return 1
    if args.audit_command == "verify":
        result = verify_trail(layout, load_public_key(public_key_path.read_bytes(), public_key_path.name))
        if not result.ok:
            print(f"edgenvr: audit trail NOT intact: {result.problem}", file=sys.stderr)
            return 1
        print(f"OK: audit trail intact, {result.records} records")
        return 0
    for record in read_records(layout, args.since, args.until):
        if args.json:
            print(json.dumps({name: getattr(record, name) for name in record.__dataclass_fields__}))
        else:
            span = "" if record.from_ms is None or record.to_ms is None else \
                f" {format_ms(record.from_ms)} - {format_ms(record.to_ms)}"
            print(_printable(f"{record.seq:>6} {format_ms(record.time_ms)} {record.actor:<12} {record.action:<18}"
                             f" {record.camera or '-'}{span} {record.reason} {record.detail}".rstrip()))
    return 0


def _printable(text: str) -> str:
    """Recorded text as it can be shown on a terminal: control characters escaped, never interpreted."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in text)


def add_evidence_commands(sub: "argparse._SubParsersAction[argparse.ArgumentParser]", load: Loader,
                          time_arg: Callable[[str], int], text_arg: Callable[[str], str], time_forms: str) -> None:
    identity = sub.add_parser("identity", help="the box's id and the public key that signs its exports")
    identity.add_argument("--config", required=True)
    identity.set_defaults(func=lambda args: cmd_identity(args, load))

    export = sub.add_parser("export", help="a camera's video from..to as a signed folder anyone can verify")
    export.add_argument("--config", required=True)
    export.add_argument("--camera", type=text_arg, required=True)
    export.add_argument("--from", dest="from_ms", type=time_arg, required=True, metavar="TIME", help=time_forms)
    export.add_argument("--to", dest="to_ms", type=time_arg, required=True, metavar="TIME", help="like --from")
    export.add_argument("--out", required=True, help="the folder to create (never an existing one)")
    export.add_argument("--reason", type=text_arg, required=True, help="why (police report, request number)")
    export.add_argument("--by", type=text_arg, help="who exports (default: the login name)")
    export.add_argument("--hold", action="store_true", help="also keep the source video whatever its age")
    export.add_argument("--allow-altered", action="store_true",
                        help="export source segments altered since recording anyway (marked in the manifest)")
    export.set_defaults(func=lambda args: cmd_export(args, load))

    report = sub.add_parser("report", help="a signed continuity report: per camera and box-local day the share"
                            " recorded, every gap and why, offline and tamper events, holds, clips sent to the hub")
    report.add_argument("--config", required=True)
    report.add_argument("--from", dest="from_ms", type=time_arg, required=True, metavar="TIME", help=time_forms)
    report.add_argument("--to", dest="to_ms", type=time_arg, required=True, metavar="TIME",
                        help="like --from; at most 366 days after it (time after now is not counted)")
    report.add_argument("--camera", type=text_arg, help="one camera (default: every camera)")
    report.add_argument("--out", required=True, help="FILE.html (one printable page) or FILE.json (the signed"
                        " document, with FILE.sig and FILE.pub beside it); never an existing file")
    report.add_argument("--reason", type=text_arg, default="", help="why (a request number); kept in the report"
                        " and the audit trail")
    report.add_argument("--by", type=text_arg, help="who asks (default: the login name)")
    report.set_defaults(func=lambda args: cmd_report(args, load))

    verify = sub.add_parser("verify", help="check an export folder or a continuity report (.html, .json): no"
                            " config needed, on any machine")
    verify.add_argument("folder", metavar="FOLDER|REPORT")
    verify.add_argument("--pubkey", help="the box's public key obtained out of band, instead of device.pub")
    verify.set_defaults(func=cmd_verify)

    add_audit_parser(sub, "who exported, held or approved what (the audit trail)", time_arg, time_forms,
                     lambda args: cmd_audit(args, load))


def add_audit_parser(sub: "argparse._SubParsersAction[argparse.ArgumentParser]", text: str,
                     time_arg: Callable[[str], int], time_forms: str, run: Callable[[argparse.Namespace], int],
                     config_default: object = None) -> None:
    """`audit [list] [--since --until --json]` and `audit verify` (the box's, or the hub's: `run` finds the trail;
    `config_default` is what --config is when not given)."""
    audit = sub.add_parser("audit", help=text)
    audit_sub = audit.add_subparsers(dest="audit_command")
    for parser in (audit, audit_sub.add_parser("list", help="the records (default)")):
        parser.add_argument("--config", default=config_default)
        parser.add_argument("--since", type=time_arg, metavar="TIME", help=f"from: {time_forms}")
        parser.add_argument("--until", type=time_arg, metavar="TIME", help="to, written like --since")
        parser.add_argument("--json", action="store_true", help="one JSON object per line")
        parser.set_defaults(func=run)
    check = audit_sub.add_parser("verify", help="exit 0 if the chain is intact, else name the first bad record")
    check.add_argument("--config", default=config_default)
    check.set_defaults(func=run)
