"""`edgenvr discover`: the ONVIF cameras on the LAN (WS-Discovery) and, with --user, their profiles and RTSP
URIs as [[cameras]] tables to paste into the config (edgenvr.camera_discovery does the work; this module
takes the password and prints; its arguments are cli.discover_command_line's).

The password comes from --password-file (its first line), --password-stdin (the first line of stdin, as
`edgenvr user` takes passwords), the EDGENVR_CAMERA_PASSWORD environment variable, or is asked on the
terminal; never from an argument (it would be in the shell history and in `ps`). It is printed only with
--show-password; otherwise the URLs carry the placeholder "<password>".

Exit codes: 0 every camera was read (or, without --user, at least one answered); 1 no camera answered, or
one could not be read (wrong password, not ONVIF, unusable XML, unreachable: each said on stderr, the others
still printed); 2 bad arguments or no password to use.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import os
import sys
from dataclasses import asdict

from edgenvr.camera_discovery.camera_entries import CameraEntry, camera_entry, shown
from edgenvr.camera_discovery.onvif_device import (
    CameraDescription,
    OnvifError,
    OnvifProblem,
    describe_camera,
    device_service_url,
)
from edgenvr.camera_discovery.ws_discovery import (
    DiscoveredDevice,
    DiscoveryError,
    DiscoveryResult,
    discover,
    multicast_interfaces,
)
from edgenvr.cli.discover_command_line import PASSWORD_ENV
from edgenvr.core.process_setup import setup_logging
from edgenvr.core.url_redaction import redact_url

MAX_PASSWORD_LINE = 16 * 1024   # bytes read for a password: far over any camera's limit


class _Refused(Exception):
    """Arguments that cannot be used: the message, exit 2."""


def _first_line(data: bytes, where: str) -> str:
    try:
        line = data.decode("utf-8").splitlines()[0] if data else ""
    except UnicodeDecodeError:
        raise _Refused(f"the password in {where} is not UTF-8 text") from None
    if not line:
        raise _Refused(f"{where} holds no password (its first line is empty)")
    return line


def camera_password(args: argparse.Namespace) -> str:
    """The password for --user, from the first source given (see the module's docstring)."""
    if args.password_file:
        try:
            with open(args.password_file, "rb") as file:
                return _first_line(file.readline(MAX_PASSWORD_LINE), args.password_file)
        except OSError as exc:
            raise _Refused(f"cannot read --password-file {args.password_file}: {exc.strerror or exc}") from None
    if args.password_stdin:
        return _first_line(sys.stdin.buffer.readline(MAX_PASSWORD_LINE), "stdin")
    if os.environ.get(PASSWORD_ENV):
        return os.environ[PASSWORD_ENV]
    if sys.stdin.isatty():
        password = getpass.getpass(f"password of {args.user} on the cameras: ")
        if password:
            return password
    raise _Refused(f"no password for --user {args.user}: give --password-file FILE, --password-stdin or "
                   f"${PASSWORD_ENV}, or run on a terminal to be asked (never as an argument)")


def cmd_discover(args: argparse.Namespace) -> int:
    setup_logging(args.log_level or "warning", "discover")
    try:
        if (args.device or args.show_password or args.password_file or args.password_stdin) and not args.user:
            raise _Refused("--device, --show-password and a password need --user: the cameras' user name")
        targets = [device_service_url(given) for given in args.device]
        password = camera_password(args) if args.user else None
    except (_Refused, ValueError) as exc:
        print(f"edgenvr discover: {exc}", file=sys.stderr)
        return 2
    return asyncio.run(_discover(args, targets, password))


async def _discover(args: argparse.Namespace, targets: list[str], password: str | None) -> int:
    found: list[DiscoveredDevice | None] = [None] * len(targets)
    failed = 0
    if not targets:
        try:
            interfaces = multicast_interfaces(tuple(args.interface))
        except DiscoveryError as exc:
            print(f"edgenvr discover: {exc}", file=sys.stderr)
            return 1
        result = await discover(interfaces, args.timeout)
        _say_skipped(result)
        if not result.devices:
            print(f"edgenvr discover: {_nobody_answered(result)}", file=sys.stderr)
            return 1
        found = list(result.devices)
        targets = [device.device_url or "" for device in found]
    if args.user is None or password is None:
        for device in found:
            if device is not None:
                _print_device(device, args.json)
        if not args.json:
            print("give --user (and the password) to read each camera's profiles and stream URIs", file=sys.stderr)
        return 0
    answers = await asyncio.gather(*(_describe(target, args.user, password) for target in targets))
    entries: list[CameraEntry] = []
    taken: set[str] = set()
    for device, target, answer in zip(found, targets, answers):
        if isinstance(answer, OnvifError):
            failed += 1
            print(f"edgenvr discover: {shown(str(answer), 400)}", file=sys.stderr)   # it may quote a device's fault
            if args.json:
                print(json.dumps({**_device_json(device, target), "error": {"kind": answer.kind.name.lower(),
                                                                           "message": str(answer)}}))
            continue
        entry = camera_entry(answer, args.user, password if args.show_password else None, taken,
                             device.scope("name") if device else None)
        if entry is None:
            failed += 1
            print(f"edgenvr discover: {redact_url(target)} has no profile with an RTSP stream", file=sys.stderr)
        if args.json:
            print(json.dumps({**_device_json(device, target), **_description_json(answer, entry), "error": None}))
        else:
            _print_camera(device, answer, entry)
        if entry is not None:
            entries.append(entry)
    if entries and not args.json:
        print("\n# [[cameras]] tables for edgenvr's config; `edgenvr check-config FILE` checks the result")
        for entry in entries:
            print()
            print(entry.toml(), end="")
    return 1 if failed else 0


async def _describe(device_url: str, user: str, password: str) -> CameraDescription | OnvifError:
    """The camera's description, or why it could not be read (its message names the device)."""
    if not device_url:
        return OnvifError(OnvifProblem.UNREACHABLE, "a device answered without an http:// address to ask; "
                          "give its address with --device")
    try:
        return await describe_camera(device_url, user, password)
    except OnvifError as exc:
        return exc


def _nobody_answered(result: DiscoveryResult) -> str:
    where = ", ".join(interface.describe() for interface in result.interfaces)
    lines = [f"no ONVIF camera answered on {where} within {result.timeout_s:g} s; is multicast allowed on this "
             "network (switches with IGMP snooping and no querier, Wi-Fi that drops multicast, a firewall on UDP "
             "3702)? Is the camera's ONVIF (and its discovery mode) turned on? Give a camera's address with "
             "--device to ask it directly"]
    lines += [f"  could not send on {problem}" for problem in result.send_problems]
    return "\n".join(lines)


def _say_skipped(result: DiscoveryResult) -> None:
    for line in result.unreadable:
        print(f"edgenvr discover: an answer was skipped, {shown(line, 200)}", file=sys.stderr)


def _device_json(device: DiscoveredDevice | None, target: str) -> dict[str, object]:
    if device is None:
        return {"device_url": target, "endpoint": None, "address": None, "interface": None, "scopes": []}
    return {"device_url": device.device_url, "endpoint": device.endpoint, "address": device.source,
            "interface": device.interface, "xaddrs": list(device.xaddrs), "scopes": list(device.scopes),
            "types": list(device.types)}


def _description_json(description: CameraDescription, entry: CameraEntry | None) -> dict[str, object]:
    information = asdict(description.information) if description.information else None
    profiles = [{**asdict(profile), "stream_uri": redact_url(profile.stream_uri) if profile.stream_uri else None}
                for profile in description.profiles]
    camera = None if entry is None else {"id": entry.id, "name": entry.name, "url": entry.url,
                                          "detect_url": entry.detect_url, "toml": entry.toml()}
    return {"media_url": description.media_url, "clock_offset_ms": description.clock_offset_ms,
            "information": information, "information_problem": description.information_problem,
            "profiles": profiles, "camera": camera}


def _print_device(device: DiscoveredDevice, as_json: bool) -> None:
    if as_json:
        print(json.dumps(_device_json(device, device.device_url or "")))
        return
    what = " ".join(part for part in (device.scope("name"), device.scope("hardware")) if part)
    print(f"{device.source:<16} {shown(device.device_url or 'no http address', 60):<60} "
          f"{shown(what, 40)}  {shown(device.endpoint, 60)}")


def _print_camera(device: DiscoveredDevice | None, description: CameraDescription, entry: CameraEntry | None) -> None:
    heading = f"camera {shown(redact_url(description.device_url), 120)}"
    if device is not None:
        heading += f"  (answered on {device.interface}, {shown(device.endpoint, 60)})"
    print(heading)
    information = description.information
    if information is not None:
        print("  " + shown(", ".join(part for part in (
            " ".join(part for part in (information.manufacturer, information.model) if part),
            f"firmware {information.firmware}" if information.firmware else "",
            f"serial {information.serial}" if information.serial else "") if part), 120))
    else:
        print(f"  manufacturer and model not known: {shown(description.information_problem or '', 120)}")
    print(f"  {'profile':<20} {'codec':<6} {'resolution':>10} {'fps':>5} {'kbit/s':>7}  stream")
    for profile in description.profiles:
        role = ""
        if entry is not None and profile is entry.main:
            role = "   <- url (recorded)"
        elif entry is not None and profile is entry.detect:
            role = "   <- detect_url (motion, tamper)"
        stream = redact_url(profile.stream_uri) if profile.stream_uri else f"none: {profile.problem}"
        fps = f"{profile.fps:g}" if profile.fps else "?"
        print(f"  {shown(profile.name, 20):<20} {shown(profile.encoding or '?', 6):<6} {profile.resolution:>10} "
              f"{fps:>5} {profile.bitrate_kbps or '?':>7}  {shown(stream, 200)}{role}")
    if not description.profiles:
        print("  no video profiles")
