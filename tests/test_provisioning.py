"""First-boot provisioning as the city's technician relies on it: a file dropped on the boot partition is applied
once by `edgenvr provision` and erased; a bad file changes nothing and says why next to itself; a power cut at any
step is completed by the next boot; SSH is turned on only with keys; nothing secret reaches the log.

Each test gives the command a box's file tree in a folder (`--root`): /etc/passwd, /etc/edgenvr, /var/lib/edgenvr,
/etc/ssh and an ssh.service unit, as the image has them. Real processes throughout: the command, ssh-keygen,
`systemctl --root` enabling sshd offline, SQLite, Argon2.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from argon2 import PasswordHasher

from edgenvr.config.checking import load_config
from edgenvr.runtime.provisioning import CRASH_HOOK, Step
from edgenvr.storage.layout import StorageLayout
from edgenvr.web.accounts import Accounts, LoginOutcome, SetupCodeSource

pytestmark = pytest.mark.slow
TOKEN = "enrol-TOKEN-8d1f0c2b9a"
CAMERA_PASSWORD = "cam-PASS-77"
ADMIN_PASSWORD = "admin-password-1"
SETUP_CODE = "KUNINGAN-08-SETUP-CODE"
BASE_CONFIG = '# the image\'s config\n[web]\nlisten = "0.0.0.0:8443"\n\n[storage]\nmin_free = "0"\n'


@pytest.fixture(scope="module")
def password_hash() -> str:
    # as a technician makes one (argon2-cffi's own default parameters, not the box's)
    return PasswordHasher().hash(ADMIN_PASSWORD)


@pytest.fixture(scope="module")
def technician_key(tmp_path_factory: pytest.TempPathFactory) -> str:
    key = tmp_path_factory.mktemp("keys") / "technician"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "tech@laptop", "-f", str(key)], check=True)
    return key.with_suffix(".pub").read_text().strip()


def make_box(root: Path) -> Path:
    """An image's file tree, as the firmware builds it; returns its boot partition."""
    for folder in ("etc/edgenvr", "etc/ssh", "var/lib/edgenvr", "usr/lib/systemd/system", "root", "home/tech",
                   "boot/firmware"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    (root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/bash\ntech:x:1001:1001::/home/tech:/bin/bash\n")
    (root / "etc/edgenvr/edgenvr.toml").write_text(BASE_CONFIG)
    (root / "etc/ssh/sshd_not_to_be_run").write_text("")   # SSH off in the image
    (root / "usr/lib/systemd/system/ssh.service").write_text(
        "[Unit]\nDescription=OpenBSD Secure Shell server\n[Service]\nExecStart=/usr/sbin/sshd -D\n"
        "[Install]\nWantedBy=multi-user.target\nAlias=sshd.service\n")
    return root / "boot/firmware"


def provision_file(password_hash: str | None, key: str | None, *, setup_code: str | None = None,
                   ssh_user: str = "root") -> str:
    text = (f'[box]\nid = "rt08-kuningan"\nname = "Pos RT 08 Kuningan"\n\n'
            f'[[cameras]]\nid = "gate"\nurl = "rtsp://admin:{CAMERA_PASSWORD}@192.168.1.20/stream1"\n\n'
            f'[sync]\nhub_url = "https://hub.example.id:8443"\nenrolment_token = "{TOKEN}"\n'
            f'hub_fingerprint = "{"AB" * 32}"\n\n'
            '[time]\ntimezone = "Asia/Jakarta"\nntp_servers = ["0.id.pool.ntp.org", "192.168.1.1"]\n\n[admin]\n'
            'name = "kepala"\n')
    text += f'password_hash = "{password_hash}"\n' if password_hash else f'setup_code = "{setup_code}"\n'
    if key is not None:
        text += f'\n[ssh]\nuser = "{ssh_user}"\nauthorized_keys = ["{key}"]\n'
    return text


def run_provision(root: Path, *, crash_after: Step | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, CRASH_HOOK: str(crash_after)} if crash_after else None
    return subprocess.run([sys.executable, "-m", "edgenvr", "provision", "--boot-dir", str(root / "boot/firmware"),
                           "--root", str(root)], capture_output=True, text=True, timeout=120, env=env)


def tree(root: Path) -> dict[str, str]:
    """Every file, link and folder under `root` with its content's hash, mode and owner."""
    found = {}
    for path in sorted(root.rglob("*")):
        info = path.lstat()
        content = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() and not path.is_symlink() else ""
        link = os.readlink(path) if path.is_symlink() else ""
        owner = f"{info.st_uid}:{info.st_gid}"
        found[str(path.relative_to(root))] = f"{content}{link} {stat.filemode(info.st_mode)} {owner}"
    return found


def secrets_in(text: str, password_hash: str) -> list[str]:
    return [secret for secret in (TOKEN, CAMERA_PASSWORD, password_hash, SETUP_CODE, password_hash.split("$")[-1])
            if secret in text]


def assert_provisioned(root: Path, password_hash: str, key: str) -> None:
    config = load_config(root / "etc/edgenvr/edgenvr.toml")
    assert (config.box.box_id, config.box.box_name) == ("rt08-kuningan", "Pos RT 08 Kuningan")
    assert [camera.id for camera in config.cameras] == ["gate"] and config.web.enabled   # the image's [web] stays
    assert config.sync.hub_url == "https://hub.example.id:8443" and config.sync.enrolment_token == TOKEN
    config_file = (root / "etc/edgenvr/edgenvr.toml").stat()
    assert stat.S_IMODE(config_file.st_mode) == 0o640
    data = root / "var/lib/edgenvr"
    assert stat.S_IMODE((data / "device.key").stat().st_mode) == 0o600
    with Accounts(StorageLayout(data)) as accounts:
        assert accounts.check_password("kepala", ADMIN_PASSWORD).outcome is LoginOutcome.OK
        assert [(user.name, str(user.role)) for user in accounts.users()] == [("kepala", "admin")]
    keys = root / "root/.ssh/authorized_keys"
    assert keys.read_text() == key + "\n" and stat.S_IMODE(keys.stat().st_mode) == 0o600
    assert stat.S_IMODE(keys.parent.stat().st_mode) == 0o700
    assert (root / "etc/ssh/ssh_host_ed25519_key").exists()
    assert (root / "etc/systemd/system/multi-user.target.wants/ssh.service").is_symlink()
    assert not (root / "etc/ssh/sshd_not_to_be_run").exists()
    assert os.readlink(root / "etc/localtime") == "../usr/share/zoneinfo/Asia/Jakarta"
    assert (root / "etc/timezone").read_text() == "Asia/Jakarta\n"
    assert "NTP=0.id.pool.ntp.org 192.168.1.1" in (root / "etc/systemd/timesyncd.conf.d/50-edgenvr.conf").read_text()
    state = json.loads((data / "provisioning.json").read_text())
    assert state["steps"] == [str(step) for step in Step] and state["completed_ms"] is not None
    assert not (root / "boot/firmware/edgenvr-provision.toml").exists()
    assert not (root / "boot/firmware/edgenvr-provision.error").exists()


def test_a_file_is_applied_once_and_erased(tmp_path: Path, password_hash: str, technician_key: str) -> None:
    boot = make_box(tmp_path)
    (boot / "edgenvr-provision.toml").write_text(provision_file(password_hash, technician_key))
    done = run_provision(tmp_path)
    assert done.returncode == 0, done.stderr
    assert_provisioned(tmp_path, password_hash, technician_key)
    assert "overwritten with zeros and removed" in done.stderr
    assert secrets_in(done.stdout + done.stderr, password_hash) == [], done.stderr
    # the admin's making is in the audit trail, before anything else the box ever did
    with sqlite3.connect(tmp_path / "var/lib/edgenvr/audit.sqlite3") as conn:
        records = conn.execute("SELECT actor, action, detail FROM records ORDER BY seq").fetchall()
    assert records[0][:2] == ("provisioning", "user_add") and "kepala as admin" in records[0][2]
    # applied once: the file is gone, so the next boot's unit does not run, and the command has nothing to do
    before = tree(tmp_path)
    again = run_provision(tmp_path)
    assert again.returncode == 0 and "nothing to provision" in again.stderr
    assert tree(tmp_path) == before


def test_a_bad_file_changes_nothing_and_says_why_next_to_it(tmp_path: Path, password_hash: str) -> None:
    boot = make_box(tmp_path)
    bad = (provision_file(password_hash, "ssh-ed25519 AAAAnot-a-key tech@laptop")
           .replace('id = "rt08-kuningan"', 'id = "RT 08"').replace("https://hub", "ftp://hub")
           .replace('timezone = "Asia/Jakarta"', 'timezone = "Asia/Kuningan"') + "\n[ssh_keys]\nx = 1\n")
    bad = bad.replace(f'password_hash = "{password_hash}"', f'password_hash = "{password_hash[:-8]}"\n'
                                                            f'setup_code = "{SETUP_CODE}"')
    (boot / "edgenvr-provision.toml").write_text(bad)
    before = tree(tmp_path)
    done = run_provision(tmp_path)
    assert done.returncode == 1
    after = tree(tmp_path)
    error = after.pop("boot/firmware/edgenvr-provision.error")
    assert after == before and error   # the file kept as it was, nothing else touched
    reasons = (boot / "edgenvr-provision.error").read_text()
    for key in ("box.id", "sync.hub_url", "time.timezone", "ssh.authorized_keys[0]", "ssh_keys", "admin:"):
        assert f"- {key}" in reasons, reasons
    assert "Nothing was applied." in reasons
    assert secrets_in(reasons + done.stdout + done.stderr, password_hash) == [], reasons
    # fixed and put back: applied
    (boot / "edgenvr-provision.toml").write_text(provision_file(password_hash, None))
    assert run_provision(tmp_path).returncode == 0
    assert not (boot / "edgenvr-provision.error").exists()


@pytest.mark.parametrize("step", list(Step))
def test_a_power_cut_at_any_step_is_completed_by_the_next_boot(tmp_path: Path, password_hash: str,
                                                                technician_key: str, step: Step) -> None:
    """The process is killed (SIGKILL) right after the step's work, before it is recorded: the worst moment.
    The box then never runs the new config without its admin, and the next boot's run completes it all."""
    boot = make_box(tmp_path)
    (boot / "edgenvr-provision.toml").write_text(provision_file(password_hash, technician_key))
    cut = run_provision(tmp_path, crash_after=step)
    assert cut.returncode == -9, cut.stderr
    assert (boot / "edgenvr-provision.toml").exists()
    config_written = (tmp_path / "etc/edgenvr/edgenvr.toml").read_text() != BASE_CONFIG
    assert config_written == (step is Step.CONFIG)
    if config_written:
        with Accounts(StorageLayout(tmp_path / "var/lib/edgenvr")) as accounts:
            assert accounts.has_admin()
    done = run_provision(tmp_path)
    assert done.returncode == 0, done.stderr
    assert_provisioned(tmp_path, password_hash, technician_key)
    recorded = list(Step)[:list(Step).index(step)]
    if recorded:
        assert f"resuming the provisioning of this file after: {', '.join(recorded)}" in done.stderr


def test_ssh_is_turned_on_only_with_keys(tmp_path: Path, password_hash: str, technician_key: str) -> None:
    boot = make_box(tmp_path / "without")
    (boot / "edgenvr-provision.toml").write_text(provision_file(password_hash, None))
    assert run_provision(tmp_path / "without").returncode == 0
    assert not (tmp_path / "without/etc/systemd/system/multi-user.target.wants/ssh.service").exists()
    assert (tmp_path / "without/etc/ssh/sshd_not_to_be_run").exists()
    assert not (tmp_path / "without/root/.ssh").exists() and not list((tmp_path / "without/etc/ssh").glob("*_key"))
    # keys for a technician's own account: theirs, in their home
    boot = make_box(tmp_path / "with")
    (boot / "edgenvr-provision.toml").write_text(provision_file(password_hash, technician_key, ssh_user="tech"))
    assert run_provision(tmp_path / "with").returncode == 0
    keys = tmp_path / "with/home/tech/.ssh/authorized_keys"
    assert keys.read_text() == technician_key + "\n"
    assert (keys.stat().st_uid, keys.stat().st_gid) == (1001, 1001) and keys.parent.stat().st_uid == 1001
    assert (tmp_path / "with/etc/systemd/system/multi-user.target.wants/ssh.service").is_symlink()


@pytest.fixture
def open_root() -> Iterator[Path]:
    """A folder every user can walk through (pytest's are root's alone), for files the service user makes."""
    root = Path(tempfile.mkdtemp(prefix="edgenvr-box-", dir="/tmp"))
    root.chmod(0o755)
    try:
        yield root
    finally:
        shutil.rmtree(root)


def test_the_data_directory_gets_the_service_users_files_and_a_provisioned_setup_code(
        open_root: Path, password_hash: str) -> None:
    """Run as root, the command makes the data directory's files as the directory's owner (the service user,
    here uid 4242), who must use them; a setup code from the file is stored hashed, and the console then tells to
    use it rather than showing one of its own."""
    boot = make_box(open_root)
    data = open_root / "var/lib/edgenvr"
    os.chown(data, 4242, 4242)
    for folder in (open_root / "var", open_root / "var/lib"):
        folder.chmod(0o755)
    (boot / "edgenvr-provision.toml").write_text(provision_file(None, None, setup_code=SETUP_CODE))
    done = run_provision(open_root)
    assert done.returncode == 0, done.stderr
    assert secrets_in(done.stdout + done.stderr, password_hash) == []
    for name in ("device.key", "device.pub", "users.sqlite3", "provisioning.json"):
        assert (data / name).stat().st_uid == 4242, name
    assert SETUP_CODE.encode() not in (data / "users.sqlite3").read_bytes()
    with Accounts(StorageLayout(data)) as accounts:
        assert accounts.setup_code_source() is SetupCodeSource.PROVISIONED
    shown = subprocess.run([sys.executable, "-m", "edgenvr", "setup-code", "--root", str(open_root)],
                           capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0, shown.stderr
    console = (open_root / "run/edgenvr-setup/setup.issue").read_text()
    assert "setup code of the provisioning file" in console and SETUP_CODE not in console
    with Accounts(StorageLayout(data)) as accounts:   # the provisioned code, not replaced, makes the admin
        accounts.complete_setup(SETUP_CODE.lower(), "kepala", ADMIN_PASSWORD)
        assert accounts.check_password("kepala", ADMIN_PASSWORD).outcome is LoginOutcome.OK


def test_the_erased_file_leaves_no_secret_on_its_partition(tmp_path: Path, password_hash: str) -> None:
    """Read back from the partition itself (an ext4 image, loop-mounted as the boot partition): after provisioning
    no byte of the token or the hash is left in it, where a plain unlink leaves a file's bytes for any undelete
    tool. (The box's FAT partition cannot be mounted here: this kernel has no vfat; the overwrite is the same.)"""
    root = tmp_path / "box"
    boot = make_box(root)
    image = tmp_path / "boot.img"
    with open(image, "wb") as handle:
        handle.truncate(8 * 1024 * 1024)
    subprocess.run(["mkfs.ext4", "-q", str(image)], check=True)
    subprocess.run(["mount", "-o", "loop", str(image), str(boot)], check=True)
    try:
        (boot / "edgenvr-provision.toml").write_text(provision_file(password_hash, None))
        (boot / "unlinked.txt").write_text(f"the same secret, only unlinked: {TOKEN[::-1]}\n")
        os.sync()
        (boot / "unlinked.txt").unlink()
        done = run_provision(root)
        assert done.returncode == 0, done.stderr
    finally:
        subprocess.run(["umount", str(boot)], check=True)
    raw = image.read_bytes()
    assert TOKEN[::-1].encode() in raw   # the check sees what a plain unlink leaves behind
    assert TOKEN.encode() not in raw and password_hash.encode() not in raw and CAMERA_PASSWORD.encode() not in raw
