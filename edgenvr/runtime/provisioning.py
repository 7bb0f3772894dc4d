"""`edgenvr provision`: applies the first-boot provisioning file (runtime.provision_file reads and checks it)
once, then erases it. Run as root by systemd/edgenvr-provision.service before edgenvr.service, when the file is
on the boot partition.

The steps, in this order, each done again harmlessly if it was already done:
1. device_key: the box's Ed25519 key is made in the data directory (evidence.identity; it never leaves the box;
   an existing key is kept: it already signs the box's evidence).
2. admin: the admin with the provisioned password hash, or the provisioned setup code stored hashed
   (web.accounts), each first recorded in the audit trail ("provisioning").
3. ssh: with an [ssh] table only: the keys become the user's ~/.ssh/authorized_keys (replacing what was
   there), the host keys are made if missing (`ssh-keygen -A`), and sshd is enabled and started. Without it
   nothing about SSH changes (the image keeps it off).
4. time: /etc/localtime and /etc/timezone, a timesyncd drop-in with the NTP servers.
5. config: the box's config file, written whole and durably (temporary file, fsync, rename) by
   config.writing, mode 0640, group of its directory (the service's).
Then the file is erased (see `erase_file`).

Crash safety: the config comes after the admin, so a power cut never leaves a box running the new config
without its admin; a marker in the data directory (`provisioning.json`: the file's SHA-256 and the steps done,
durable after each step, no secret in it) lets the next boot's run of the same file resume after the last
step recorded (a step cut before its record is simply done again); the file is erased only after every step.
Files in the data directory are made as its owner (the service user), never as root: the process takes the
owner's ids for those steps.
Secrets (enrolment token, password hash, setup code) never reach a log line, an exception message or the
error file: messages are built without them and scrubbed again (config.checking.ConfigError).
Failure paths: a file that does not pass the checks -> nothing is applied, the file is kept, the reasons are
logged and written next to it as `edgenvr-provision.error` (a technician pulling the SD card reads why),
exit 1; a step that fails (a full disk, systemctl refusing) -> the steps before it stay applied and recorded,
the file and the error file stay, exit 1, and the next boot resumes; the file cannot be erased (a read-only
boot partition) -> logged as an error, exit 1: it would be applied again at the next boot, harmlessly.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path, PurePosixPath

from edgenvr.config.checking import ConfigError
from edgenvr.core.clock import SYSTEM_CLOCK, Clock
from edgenvr.core.time_format import format_ms
from edgenvr.evidence.audit import AuditAction, AuditError, AuditTrail
from edgenvr.evidence.identity import IdentityError, device_identity
from edgenvr.runtime.provision_file import (
    ERROR_FILE_NAME,
    PROVISION_FILE_NAME,
    ProvisionError,
    Provisioning,
    read_provisioning,
    under_root,
)
from edgenvr.storage.durable_writes import fsync_dir, write_durably
from edgenvr.storage.layout import StorageLayout
from edgenvr.storage.permissions import DATA_UMASK
from edgenvr.web.accounts import AccountError, Accounts, SetupCodeSource, SetupRefused

log = logging.getLogger(__name__)

ACTOR = "provisioning"
SSH_UNIT = "ssh.service"                          # Debian's openssh-server (sshd.service is its alias)
SSH_OFF_SWITCH = "/etc/ssh/sshd_not_to_be_run"    # Debian's: while it exists, ssh.service does not start
TIMESYNCD_DROP_IN = "/etc/systemd/timesyncd.conf.d/50-edgenvr.conf"
CRASH_HOOK = "EDGENVR_PROVISION_CRASH_AFTER"      # tests: SIGKILL after this step's work, before its record
_COMMAND_TIMEOUT_S = 120                          # ssh-keygen -A makes an RSA key: seconds on a Pi


class Step(StrEnum):
    DEVICE_KEY = "device_key"
    ADMIN = "admin"
    SSH = "ssh"
    TIME = "time"
    CONFIG = "config"


class StepFailed(Exception):
    """A step could not be done; the message names it and holds no secret."""


@dataclass(frozen=True)
class Outcome:
    applied: bool                 # every step done and the file erased
    steps_done: tuple[Step, ...]   # recorded as done for this file (by this run or the one it resumed)
    problems: tuple[str, ...] = ()
    erasure: str = ""             # what erasing the file did, and what it can guarantee
    found: bool = True            # False: there was no file (nothing to do, not an error)


def provision(boot_dir: Path, config_path: PurePosixPath, root: Path = Path("/"), *,
              clock: Clock = SYSTEM_CLOCK) -> Outcome:
    """Apply `boot_dir`'s provisioning file to the box under `root` ("/", or a test's folder: the config, data
    directory, SSH and time files are then written there, and systemctl works on it offline)."""
    path = boot_dir / PROVISION_FILE_NAME
    error_path = boot_dir / ERROR_FILE_NAME
    if not path.exists():
        log.info("no %s: nothing to provision", path)
        return Outcome(False, (), found=False)
    try:
        provisioning = read_provisioning(path, config_path, root)
    except ProvisionError as error:
        return _refused(error_path, list(error.problems), "Nothing was applied.", clock)
    log.info("provisioning box %s from %s (SHA-256 %s)", provisioning.config.box.box_id, path, provisioning.sha256)
    data_dir = under_root(root, PurePosixPath(provisioning.config.storage.data_dir))
    layout = StorageLayout(data_dir)
    done = _steps_done(layout, provisioning.sha256)
    if done:
        log.info("resuming the provisioning of this file after: %s", ", ".join(done))
    steps: dict[Step, Callable[[], None]] = {
        Step.DEVICE_KEY: lambda: _device_key(layout, provisioning),
        Step.ADMIN: lambda: _admin(layout, provisioning, clock),
        Step.SSH: lambda: _ssh(provisioning, root),
        Step.TIME: lambda: _time(provisioning, root),
        Step.CONFIG: lambda: _config(provisioning, config_path, root),
    }
    for step, action in steps.items():
        if step in done:
            continue
        try:
            action()
        except StepFailed as error:
            problem = _scrubbed(f"{step}: {error}", provisioning)
            return _refused(error_path, [problem], f"Applied before it: {', '.join(done) or 'nothing'}. The next "
                            "boot tries again from this step (or fix the file and put it back).", clock, done)
        _crash_hook(step)
        done = (*done, step)
        _record(layout, {"sha256": provisioning.sha256, "steps": list(done), "completed_ms": None})
    _record(layout, {"sha256": provisioning.sha256, "steps": list(done), "completed_ms": clock.now_ms()})
    try:
        erasure = erase_file(path)
        error_path.unlink(missing_ok=True)   # an earlier attempt's reasons no longer hold
    except OSError as error:
        log.error("provisioning applied, but %s cannot be erased (%s): it holds secrets, remove it from the "
                  "boot partition by hand; applying it again at the next boot changes nothing", path, error)
        return Outcome(False, done, (f"{path} cannot be erased: {error.strerror or error}",))
    log.info("provisioning of box %s done; %s", provisioning.config.box.box_id, erasure)
    return Outcome(True, done, erasure=erasure)


# --- the steps ---------------------------------------------------------------------------------------------

def _device_key(layout: StorageLayout, provisioning: Provisioning) -> None:
    box = provisioning.config.box
    try:
        with as_owner_of(layout.data_dir):
            identity = device_identity(layout, box.box_id, box.box_name)
    except (IdentityError, OSError) as error:
        raise StepFailed(f"the device key cannot be made in {layout.data_dir}: {error}") from None
    log.info("device key of box %s: fingerprint %s", box.box_id, identity.fingerprint)


def _admin(layout: StorageLayout, provisioning: Provisioning, clock: Clock) -> None:
    admin = provisioning.admin
    if admin is None:
        log.info("no [admin] in the file: the box makes a setup code for its console at boot")
        return
    box = provisioning.config.box
    try:
        with as_owner_of(layout.data_dir):
            identity = device_identity(layout, box.box_id, box.box_name)
            with Accounts(layout, clock) as accounts:
                if admin.password_hash is not None:
                    with AuditTrail(layout, identity, clock) as trail:   # no audit record, no admin
                        trail.append(ACTOR, AuditAction.USER_ADD, detail=f"{admin.name} as admin, with the password "
                                     "hash of the provisioning file")
                    added = accounts.put_admin_with_hash(admin.name, admin.password_hash)
                    log.info("admin %s %s with the provisioned password hash", admin.name,
                             "added" if added else "given")
                else:
                    assert admin.setup_code is not None
                    try:
                        accounts.set_setup_code(admin.setup_code, SetupCodeSource.PROVISIONED)
                        log.info("the provisioned setup code is stored (hashed); the first admin is made with it "
                                 "on the web's setup page")
                    except SetupRefused:
                        log.info("the box has an admin already: the provisioned setup code is not needed")
    except (AccountError, AuditError, IdentityError, OSError) as error:
        raise StepFailed(str(error)) from None


def _ssh(provisioning: Provisioning, root: Path) -> None:
    ssh = provisioning.ssh
    if ssh is None:
        log.info("no [ssh] in the file: SSH is left as it is (off in the image)")
        return
    etc_ssh = under_root(root, PurePosixPath("/etc/ssh"))
    if not etc_ssh.is_dir():
        raise StepFailed("openssh-server is not installed on this box (no /etc/ssh): SSH cannot be turned on")
    home = under_root(root, ssh.home)
    dot_ssh = home / ".ssh"
    try:
        dot_ssh.mkdir(mode=0o700, parents=False, exist_ok=True)
        os.chmod(dot_ssh, 0o700)
        _chown(dot_ssh, ssh.uid, ssh.gid)
        keys = dot_ssh / "authorized_keys"
        write_durably(keys, ("\n".join(ssh.authorized_keys) + "\n").encode(), mode=0o600)
        _chown(keys, ssh.uid, ssh.gid)
        under_root(root, PurePosixPath(SSH_OFF_SWITCH)).unlink(missing_ok=True)
    except OSError as error:
        raise StepFailed(f"cannot write {ssh.user}'s authorized_keys under {home}: {error.strerror or error}") from None
    _command(["ssh-keygen", "-A", "-f", str(root)], "make the SSH host keys")   # only the missing ones
    _enable(SSH_UNIT, root, start=True)
    log.info("SSH enabled for %s with %d key(s)", ssh.user, len(ssh.authorized_keys))


def _time(provisioning: Provisioning, root: Path) -> None:
    time = provisioning.time
    if time is None:
        return
    try:
        if time.timezone is not None:
            localtime = under_root(root, PurePosixPath("/etc/localtime"))
            temporary = localtime.with_name(".localtime.edgenvr")
            temporary.unlink(missing_ok=True)
            temporary.symlink_to(f"../usr/share/zoneinfo/{time.timezone}")   # as timedatectl makes it
            os.replace(temporary, localtime)
            write_durably(under_root(root, PurePosixPath("/etc/timezone")), f"{time.timezone}\n".encode(), mode=0o644)
            fsync_dir(localtime.parent)
            log.info("time zone set to %s", time.timezone)
        if time.ntp_servers:
            drop_in = under_root(root, PurePosixPath(TIMESYNCD_DROP_IN))
            text = "# written by edgenvr provision\n[Time]\nNTP=" + " ".join(time.ntp_servers) + "\n"
            write_durably(drop_in, text.encode(), mode=0o644)
            os.chmod(drop_in.parent, 0o755)   # timesyncd runs as its own user
            log.info("NTP servers set to %s", ", ".join(time.ntp_servers))
    except OSError as error:
        raise StepFailed(f"cannot write the time settings: {error.strerror or error}") from None
    if time.ntp_servers and root == Path("/"):
        _best_effort(["systemctl", "try-restart", "--no-block", "systemd-timesyncd.service"], "restart timesyncd")


def _config(provisioning: Provisioning, config_path: PurePosixPath, root: Path) -> None:
    path = under_root(root, config_path)
    try:
        write_durably(path, provisioning.config_text.encode(), mode=0o640)
        # the config's directory belongs to the service's group (systemd/edgenvr.tmpfiles.conf): so does the file
        _chown(path, 0, os.stat(path.parent).st_gid)
    except OSError as error:
        raise StepFailed(f"cannot write {config_path}: {error.strerror or error}") from None
    log.info("config written to %s (box %s, %d camera(s)%s)", config_path, provisioning.config.box.box_id,
             len(provisioning.config.cameras), ", syncing to " + provisioning.config.sync.hub_url
             if provisioning.config.sync.enabled else "")


# --- erasing the file ----------------------------------------------------------------------------------------

def erase_file(path: Path) -> str:
    """Overwrite `path` with zeros, fsync, truncate, unlink, fsync its directory; what that guarantees, in words.

    On ext4 (and any filesystem) this leaves nothing readable through the filesystem. On FAT (the boot partition)
    the overwrite matters more: deleting only marks the directory entry, and undelete tools read the freed
    clusters back; the zeros are written over those very clusters (FAT writes in place). What no filesystem can
    promise on flash (SD cards, eMMC, SSDs): the card's controller writes a changed block elsewhere and erases the
    old copy when it likes, so the old bytes may survive in the chip, readable by desoldering it or with vendor
    tools. Hence every secret in the file is of one use: the enrolment token is spent at the first contact (and
    expires in 7 days), the setup code when the admin is made, and the password hash is Argon2id."""
    filesystem = _filesystem_type(path)
    with open(path, "r+b") as handle:
        size = os.fstat(handle.fileno()).st_size
        handle.write(b"\0" * size)
        handle.flush()
        os.fsync(handle.fileno())
        handle.truncate(0)
        os.fsync(handle.fileno())
    path.unlink()
    try:
        fsync_dir(path.parent)
    except OSError:   # a filesystem without directory fsync: write everything out instead
        os.sync()
    if filesystem in ("vfat", "msdos", "exfat"):
        os.sync()   # FAT keeps its allocation table apart from the directory: make sure both are out
        return (f"{path} overwritten with zeros and removed from its {filesystem} filesystem (undelete tools find "
                "zeros); copies the SD card's controller may keep in its flash cannot be erased from here")
    return (f"{path} overwritten with zeros and removed ({filesystem or 'unknown filesystem'}); copies the flash "
            "controller may keep cannot be erased from here")


def _filesystem_type(path: Path) -> str:
    """The type of the filesystem `path` is on (the longest mount point over it in /proc/self/mountinfo)."""
    target = os.path.realpath(path)
    best, kind = "", ""
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return ""
    for line in lines:
        before, _, after = line.partition(" - ")
        fields = before.split()
        if len(fields) < 5 or not after:
            continue
        mount_point = fields[4].replace("\\040", " ")
        inside = target == mount_point or target.startswith(mount_point.rstrip("/") + "/")
        if inside and len(mount_point) >= len(best):
            best, kind = mount_point, after.split()[0]
    return kind


# --- the marker, the error file ------------------------------------------------------------------------------

def _steps_done(layout: StorageLayout, sha256: str) -> tuple[Step, ...]:
    """The steps recorded for this same file by a run that did not finish; () for a new file or a finished one
    (the same file put back after it was applied is applied again: every step is harmless to repeat)."""
    try:
        state = json.loads(layout.provisioning_state_path.read_text())
    except (OSError, ValueError):
        return ()
    if not isinstance(state, dict) or state.get("sha256") != sha256 or state.get("completed_ms") is not None:
        return ()
    return tuple(step for step in Step if step in state.get("steps", []))


def _record(layout: StorageLayout, state: dict[str, object]) -> None:
    try:
        with as_owner_of(layout.data_dir):
            write_durably(layout.provisioning_state_path, json.dumps(state, sort_keys=True).encode())
    except OSError as error:   # the data disk full or failing: the step is done, only resuming loses it
        log.error("cannot record the provisioning's progress in %s: %s", layout.provisioning_state_path, error)


def _refused(error_path: Path, problems: list[str], what: str, clock: Clock,
             done: tuple[Step, ...] = ()) -> Outcome:
    for problem in problems:
        log.error("provisioning refused: %s", problem)
    text = (f"edgenvr provision, {format_ms(clock.now_ms())}: the provisioning file next to this one was not "
            f"applied.\n{what}\n\n" + "".join(f"- {problem}\n" for problem in problems))
    try:   # on the boot partition, for whoever pulls the card: what is wrong, never a secret (scrubbed above)
        with open(error_path, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        fsync_dir(error_path.parent)
    except OSError as error:
        log.error("cannot write %s: %s", error_path, error)
    return Outcome(False, done, tuple(problems))


def _scrubbed(message: str, provisioning: Provisioning) -> str:
    return ConfigError([message], secrets=provisioning.secrets).problems[0]


def _crash_hook(step: Step) -> None:
    """For tests of a power cut: the process is killed right after `step`'s work, before it is recorded."""
    if os.environ.get(CRASH_HOOK) == step:
        os.kill(os.getpid(), signal.SIGKILL)


# --- the system ---------------------------------------------------------------------------------------------

@contextmanager
def as_owner_of(directory: Path) -> Iterator[None]:
    """Run as the owner of `directory` (the service user owns the data directory), so what is made there is
    theirs, with the data's umask (storage.permissions); as root only when it is root's (a test's folder).
    Effective ids only: they are taken back after."""
    owner = os.stat(directory)
    umask = os.umask(DATA_UMASK)
    try:
        if os.geteuid() != 0 or owner.st_uid == 0:
            yield
            return
        os.setegid(owner.st_gid)
        os.seteuid(owner.st_uid)
        try:
            yield
        finally:
            os.seteuid(0)
            os.setegid(0)
    finally:
        os.umask(umask)


def _chown(path: Path, uid: int, gid: int) -> None:
    if os.geteuid() == 0:
        os.chown(path, uid, gid, follow_symlinks=False)


def _enable(unit: str, root: Path, *, start: bool) -> None:
    """Enable `unit` (its [Install] links, as `systemctl enable` makes them: offline with --root), and on a
    running box start it now: this boot's start-up was planned before the unit was enabled."""
    if root != Path("/"):
        _command(["systemctl", f"--root={root}", "enable", unit], f"enable {unit}")
        return
    _command(["systemctl", "enable", unit], f"enable {unit}")
    if start:
        _best_effort(["systemctl", "start", "--no-block", unit], f"start {unit}")


def _command(command: list[str], what: str) -> None:
    if shutil.which(command[0]) is None:
        raise StepFailed(f"cannot {what}: {command[0]} is not installed")
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=_COMMAND_TIMEOUT_S, check=False,
                              stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as error:
        raise StepFailed(f"cannot {what}: {error}") from None
    if done.returncode != 0:
        raise StepFailed(f"cannot {what}: {(done.stderr or done.stdout).strip()[-300:]}")


def _best_effort(command: list[str], what: str) -> None:
    try:
        _command(command, what)
    except StepFailed as error:
        log.warning("%s (it takes effect at the next boot)", error)
