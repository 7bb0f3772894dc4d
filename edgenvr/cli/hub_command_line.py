"""The `edgenvr hub` command line: its arguments, and the hub's config as every hub command reads it. The
commands themselves are in cli.hub_commands, imported only when one runs (cli.deferred_command): the hub's
stack never slows the box's commands.

Failure paths: no --config, or a config with problems -> the problems on stderr, exit 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from edgenvr.cli.deferred_command import Deferred
from edgenvr.cli.user_commands import add_hub_people_commands
from edgenvr.core.units import MINUTE_MS
from edgenvr.hub.hub_config import HubConfig, HubConfigError, load_hub_config
from edgenvr.sync.hub_protocol import SILENT_AFTER_MS


def hub_config_of(args: argparse.Namespace) -> HubConfig:
    """The hub's config from --config; its problems on stderr and exit 2."""
    if not getattr(args, "config", None):
        print("edgenvr hub: --config HUB.toml is required", file=sys.stderr)
        raise SystemExit(2)
    try:
        return load_hub_config(args.config)
    except HubConfigError as exc:
        print(f"edgenvr hub: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def _hub(name: str) -> Deferred:
    return Deferred("edgenvr.cli.hub_commands", name)


def add_hub_commands(sub: "argparse._SubParsersAction[argparse.ArgumentParser]", time_arg: Callable[[str], int],
                     text_arg: Callable[[str], str], time_forms: str) -> None:
    hub = sub.add_parser("hub", help="the city hub: serve (with --config alone), enrol and revoke boxes, clips")
    hub.add_argument("--config", help="the hub's config file (HUB.toml)")
    hub.set_defaults(func=_hub("cmd_hub_serve"))
    hub_sub = hub.add_subparsers(dest="hub_command")

    def command(name: str, text: str, func: object) -> argparse.ArgumentParser:
        parser = hub_sub.add_parser(name, help=text)
        parser.add_argument("--config", default=argparse.SUPPRESS, help="the hub's config file (HUB.toml)")
        parser.set_defaults(func=func)
        return parser

    migrate = command("migrate", "create the hub's missing tables and upgrade older ones (before the hub starts)",
                      _hub("cmd_hub_migrate"))
    migrate.add_argument("--wait", type=float, default=60.0, metavar="SECONDS",
                         help="wait this long for the database to answer (default 60)")
    enrol = command("enrol", "print a one-time enrolment token for a box", _hub("cmd_hub_enrol"))
    enrol.add_argument("--box", required=True, help="the box's [box] id")
    enrol.add_argument("--site", required=True, help="where it is (shown in the fleet view)")
    revoke = command("revoke", "refuse everything a box signs from now on", _hub("cmd_hub_revoke"))
    revoke.add_argument("--box", required=True)
    clips = command("clips", "list received clips", _hub("cmd_hub_clips"))
    clips.add_argument("--box")
    clips.add_argument("--json", action="store_true", help="one JSON object per line")
    fetch = command("fetch", "write a clip's evidence folder (check it with `edgenvr verify DIR`)", _hub("cmd_hub_fetch"))
    fetch.add_argument("clip", help="the clip id (from `edgenvr hub clips`)")
    fetch.add_argument("--out", required=True, help="an empty or new folder")
    pull = command("pull", "ask a box for a range of one camera (it uploads it as a clip); prints the request id",
                   _hub("cmd_hub_pull"))
    pull.add_argument("--box", required=True, type=text_arg)
    pull.add_argument("--camera", required=True, type=text_arg)
    pull.add_argument("--from", dest="from_ms", type=time_arg, required=True, metavar="TIME", help=time_forms)
    pull.add_argument("--to", dest="to_ms", type=time_arg, required=True, metavar="TIME", help="like --from")
    pull.add_argument("--reason", required=True, type=text_arg, help="why (police report, request number)")
    listing = command("pulls", "list pull requests and how each stands", _hub("cmd_hub_pulls"))
    listing.add_argument("--box")
    listing.add_argument("--json", action="store_true", help="one JSON object per line")
    lost = command("lost", "clips boxes could not send because their video was deleted first, and why", _hub("cmd_hub_lost"))
    lost.add_argument("--box")
    lost.add_argument("--json", action="store_true", help="one JSON object per line")
    boxes = command("boxes", "the fleet: each box's last report, silent boxes, offline cameras, tamper", _hub("cmd_hub_boxes"))
    boxes.add_argument("--json", action="store_true", help="one JSON object per line")
    boxes.add_argument("--silent-minutes", type=float, default=SILENT_AFTER_MS / MINUTE_MS,
                       help="a box that has not reported for this long is flagged silent (default: %(default)s)")
    add_hub_people_commands(hub_sub, hub_config_of, text_arg, time_arg, time_forms)   # user, token, audit
