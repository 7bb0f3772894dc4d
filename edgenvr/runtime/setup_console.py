"""`edgenvr setup-code`: at each boot of a box without an admin, a one-time setup code for its web setup page
(web.setup_routes), shown on the box's own console only. Run as root by systemd/edgenvr-setup-code.service,
before edgenvr.service and before the login prompts.

What it does:
- an admin exists -> it removes its console text (nothing to set up) and stops;
- the provisioning file gave a setup code (web.accounts keeps where a code came from) -> the console says to
  use that one; its code is not replaced;
- otherwise -> a new random code (web.accounts.new_setup_code, 79 bits) replaces any earlier one, stored
  hashed in users.sqlite3, and the console shows it with the address of the setup page.

Where the code is shown: `/run/edgenvr-setup/setup.issue` (root only, 0600, in RAM: gone at power-off), which
the console's login prompt (agetty) prints through `/etc/issue.d/50-edgenvr-setup.issue` (agetty reads
/etc/issue.d when /etc/issue exists, as on Debian) and `/run/issue.d/50-edgenvr-setup.issue` (when it does not),
both links to it. The links are made here when /etc can be written; an image with a read-only /etc ships the
first link (a dangling link is skipped by agetty). Never in the journal: nothing here prints or logs the code.
Invariants: the code exists in clear only in that file and on the screen; a new boot makes a new one; the
code dies with its use (web.accounts).
Failure paths: the accounts file unusable -> AccountError, exit 1 (the web's setup page then says no code
waits, and `edgenvr user add` still works); the console text cannot be written -> exit 1 with the reason (the
stored code then is of no use: the next boot makes another).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from edgenvr.config.records import Config
from edgenvr.core.clock import SYSTEM_CLOCK, Clock
from edgenvr.runtime.provision_file import under_root
from edgenvr.runtime.provisioning import as_owner_of
from edgenvr.storage.durable_writes import write_durably
from edgenvr.storage.layout import StorageLayout
from edgenvr.web.accounts import Accounts, SetupCodeSource, new_setup_code

log = logging.getLogger(__name__)

CONSOLE_TEXT = PurePosixPath("/run/edgenvr-setup/setup.issue")
ISSUE_LINKS = (PurePosixPath("/etc/issue.d/50-edgenvr-setup.issue"),
               PurePosixPath("/run/issue.d/50-edgenvr-setup.issue"))


@dataclass(frozen=True)
class ConsoleSetup:
    shown: SetupCodeSource | None   # what the console now shows: a new code, the provisioned one's hint, or nothing
    console_text: Path


def show_setup_code(config: Config, root: Path = Path("/"), clock: Clock = SYSTEM_CLOCK) -> ConsoleSetup:
    """See the module docstring. `root`: the box's root ("/"; a test's folder, under which the config's data
    directory, /run and /etc are)."""
    layout = StorageLayout(under_root(root, PurePosixPath(config.storage.data_dir)))
    text_path = under_root(root, CONSOLE_TEXT)
    code = None
    with as_owner_of(layout.data_dir), Accounts(layout, clock) as accounts:
        if accounts.has_admin():
            source = None
        else:
            source = accounts.setup_code_source()
            if source is not SetupCodeSource.PROVISIONED:
                code = new_setup_code()
                accounts.set_setup_code(code, SetupCodeSource.CONSOLE)
                source = SetupCodeSource.CONSOLE
    if source is None:
        text_path.unlink(missing_ok=True)
        log.info("this box has an admin: no setup code")
        return ConsoleSetup(None, text_path)
    write_durably(text_path, _console_text(config, code).encode(), mode=0o600)
    os.chmod(text_path.parent, 0o700)
    for link in ISSUE_LINKS:
        _link(under_root(root, link), CONSOLE_TEXT)
    log.info("this box has no admin: %s (%s)", "a new setup code is shown on its console" if code else
             "the setup code of its provisioning file makes the first admin", text_path)
    return ConsoleSetup(source, text_path)


def _console_text(config: Config, code: str | None) -> str:
    """What the login prompt shows above itself. `\\4` is agetty's escape for the box's IPv4 address."""
    scheme = "https" if config.web.tls else "http"
    page = f"{scheme}://\\4:{config.web.port}/"
    if not config.web.enabled:
        page = "(this box's config has no [web] table: add one to use the setup page)"
    lines = ["", "edgenvr: this box has no admin yet.", f"Open {page} on this network and make the first admin"]
    if code is None:
        lines += ["with the setup code of the provisioning file.",
                  "(Kotak ini belum punya admin: buka halaman di atas dan pakai kode penyiapan dari berkas penyiapan.)"]
    else:
        lines += ["with this one-time setup code:", "", f"    {code}", "",
                  "(Kotak ini belum punya admin: buka halaman di atas dan masukkan kode penyiapan ini.)"]
    if config.web.enabled:   # agetty shows the hostname's address (127.0.1.1) until an interface has one
        lines += ["An address of 127.x means the box is not on the network yet: check its cable.",
                  "(Alamat 127.x berarti kotak belum tersambung ke jaringan: periksa kabelnya.)"]
    return "\n".join(lines) + "\n\n"


def _link(link: Path, target: PurePosixPath) -> None:
    """`link` -> `target`, made if missing; a read-only /etc is logged: the image must ship the link."""
    try:
        if os.path.lexists(link):
            return
        link.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        link.symlink_to(target)
    except OSError as error:
        log.warning("cannot link %s to the setup code's console text (%s): the image should ship that link, or "
                    "the login prompt will not show the code", link, error.strerror or error)
