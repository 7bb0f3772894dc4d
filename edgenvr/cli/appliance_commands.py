"""The appliance's boot-time commands, run as root by their systemd units: `edgenvr provision` (apply the
boot partition's provisioning file once: runtime.provisioning) and `edgenvr setup-code` (a box without an admin
shows a one-time setup code on its console: runtime.setup_console).

`--root DIR` makes either work on a box's file tree in DIR instead of this machine's (tests; an image being
built): the config path, the data directory, /etc and /run are taken under it; `--boot-dir` is a plain path.
Exit codes: 0 done (or nothing to do), 1 refused or failed (the reasons are logged, and for provisioning
written next to the file), 2 bad arguments or an unusable config. Nothing either prints is secret: the setup
code goes to the console text alone, never to stdout or the journal.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path, PurePosixPath

from edgenvr.cli.evidence_commands import Loader
from edgenvr.core.process_setup import setup_logging

BOX_CONFIG = "/etc/edgenvr/edgenvr.toml"


def _box_path(text: str) -> PurePosixPath:
    path = PurePosixPath(text)
    if not path.is_absolute():
        raise argparse.ArgumentTypeError(f"{text!r}: give the absolute path the file has on the box")
    return path


def cmd_provision(args: argparse.Namespace) -> int:
    from edgenvr.runtime.provisioning import provision
    setup_logging(args.log_level or "info", "provision")
    outcome = provision(Path(args.boot_dir), args.config, Path(args.root))
    return 0 if outcome.applied or not outcome.found else 1   # the reasons are logged and written next to the file


def cmd_setup_code(args: argparse.Namespace, load: Loader) -> int:
    from edgenvr.runtime.provision_file import under_root
    from edgenvr.runtime.setup_console import show_setup_code
    from edgenvr.web.accounts import AccountError
    setup_logging(args.log_level or "info", "setup-code")
    root = Path(args.root)
    config = load(str(under_root(root, args.config)))
    try:
        shown = show_setup_code(config, root)
    except (AccountError, OSError) as error:
        print(f"edgenvr setup-code: {error}", file=sys.stderr)
        return 1
    print("an admin exists: nothing to set up" if shown.shown is None else
          f"the console shows how to make the first admin ({shown.console_text})")
    return 0


def add_appliance_commands(sub: "argparse._SubParsersAction[argparse.ArgumentParser]", load: Loader) -> None:
    provision = sub.add_parser("provision",
                               help="apply the boot partition's edgenvr-provision.toml once, then erase it")
    provision.add_argument("--boot-dir", required=True, help="where the boot partition is mounted (/boot/firmware)")
    provision.add_argument("--config", type=_box_path, default=PurePosixPath(BOX_CONFIG),
                           help=f"the box's config file to write (default {BOX_CONFIG})")
    provision.add_argument("--root", default="/", help="work on the box's file tree in this folder (tests)")
    provision.set_defaults(func=cmd_provision)

    setup = sub.add_parser("setup-code", help="a box without an admin: show a one-time setup code on its console")
    setup.add_argument("--config", type=_box_path, default=PurePosixPath(BOX_CONFIG),
                       help=f"the box's config file (default {BOX_CONFIG})")
    setup.add_argument("--root", default="/", help="work on the box's file tree in this folder (tests)")
    setup.set_defaults(func=lambda args: cmd_setup_code(args, load))
