"""The `edgenvr discover` command line: its arguments. The command (cli.discover_command, which says where the
password comes from and the exit codes) is imported only when it runs: the ONVIF client's aiohttp never slows
the other commands (cli.deferred_command).
"""

from __future__ import annotations

import argparse
import math

from edgenvr.cli.deferred_command import Deferred

PASSWORD_ENV = "EDGENVR_CAMERA_PASSWORD"
DEFAULT_TIMEOUT_S = 3.0   # how long the probe waits (WS-Discovery answers come within APP_MAX_DELAY, 0.5 s)
MAX_TIMEOUT_S = 60.0


def _timeout_arg(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and 0 < value <= MAX_TIMEOUT_S):
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds more than 0, at most "
                                         f"{MAX_TIMEOUT_S:.0f}")
    return value


def add_discover_command(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    parser = sub.add_parser("discover", help="find ONVIF cameras on the LAN; with --user, their stream URIs as "
                                             "[[cameras]] tables for the config")
    parser.add_argument("--interface", action="append", default=[], metavar="NAME",
                        help="probe on this network interface only (repeatable; default: every one that is up "
                             "with IPv4 and multicast)")
    parser.add_argument("--timeout", type=_timeout_arg, default=DEFAULT_TIMEOUT_S, metavar="SECONDS",
                        help=f"how long to wait for answers (default: {DEFAULT_TIMEOUT_S:.0f})")
    parser.add_argument("--device", action="append", default=[], metavar="URL",
                        help="ask this device instead of probing: its device service URL, or a host[:port] "
                             "(repeatable; needs --user)")
    parser.add_argument("--user", help="the cameras' user name; then their profiles and stream URIs are read")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--password-file", metavar="FILE", help="read the password from this file's first line")
    source.add_argument("--password-stdin", action="store_true", help="read the password from stdin's first line")
    parser.add_argument("--show-password", action="store_true",
                        help="write the password into the printed URLs (default: the placeholder <password>)")
    parser.add_argument("--json", action="store_true", help="one JSON object per camera per line")
    parser.epilog = (f"Without --password-file or --password-stdin the password is taken from ${PASSWORD_ENV}, "
                     "or asked on the terminal.")
    parser.set_defaults(func=Deferred("edgenvr.cli.discover_command", "cmd_discover"))
