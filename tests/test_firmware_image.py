"""The appliance image (firmware/): built from Debian packages and this checkout's wheel, booted under qemu
through its own boot loader, and checked from its serial console.

One build and one boot for the module: `firmware/build --arch amd64` into a temporary directory (Debian packages
and wheels are cached in build/firmware-cache/ of the checkout; a clean clone downloads them), then the image is
grown to 3 GiB, as flashing it onto a larger card does, and booted by qemu with UEFI firmware (OVMF) and the
image's own systemd-boot, kernel and initramfs. Only the boot entry is changed for the test: two options on the
kernel command line put the console on the serial port and ask for the image's report unit
(systemd.wants=edgenvr-selftest.service), which prints "edgenvr-selftest ..." lines once the boot is done. The
root filesystem is the one built. Its network port gets an address from qemu's DHCP and reaches nothing else.
KVM is used when it works here, otherwise qemu emulates the CPU (tcg).

Marked `firmware` (and `slow`): `pytest -m "not firmware"` leaves it out. Needs root (mmdebstrap's root mode)
and the Debian packages scripts/setup installs for the tests (mmdebstrap, genimage, qemu-system-x86, ovmf, ...).
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
BUILD = REPO / "firmware" / "build"
CACHE = REPO / "build" / "firmware-cache"
OVMF_CODE = Path("/usr/share/OVMF/OVMF_CODE_4M.fd")
OVMF_VARS = Path("/usr/share/OVMF/OVMF_VARS_4M.fd")
DISK_BYTES = 3 * 1024**3          # the "card" the image is flashed onto
BUILD_TIMEOUT_S = 1200
REPORT_TIMEOUT_S = 600            # boot to the end of the report, under emulation on a busy 2-core machine
KERNEL_START_TIMEOUT_S = 60       # with KVM: no kernel by then means KVM does not work here
TOOLS = {"mmdebstrap": "mmdebstrap", "genimage": "genimage", "mksquashfs": "squashfs-tools",
         "mkfs.vfat": "dosfstools", "mcopy": "mtools", "sfdisk": "fdisk", "debugfs": "e2fsprogs",
         "ssh-keygen": "openssh-client", "qemu-system-x86_64": "qemu-system-x86"}
TEST_KERNEL_OPTIONS = "console=ttyS0,115200 systemd.wants=edgenvr-selftest.service"
BOX_ID = "rt08-firmware-test"
# docs/provisioning.md: the box's id, a one-time setup code for the first admin, a technician's SSH key, the time
# zone. The key is made for the run.
PROVISION_FILE = """\
[box]
id = "{box_id}"

[admin]
setup_code = "FIRMWARE-TEST-2026-SETUP"

[ssh]
authorized_keys = ["{key}"]

[time]
timezone = "Asia/Jakarta"
"""

pytestmark = [pytest.mark.slow, pytest.mark.firmware, pytest.mark.timeout(BUILD_TIMEOUT_S + 2 * REPORT_TIMEOUT_S)]


@dataclass
class BuiltImage:
    out: Path
    image: Path
    report: dict


@dataclass
class BootReport:
    """What the image's self-test printed: `facts` maps a fact to the values of each line that named it."""
    accelerator: str
    facts: dict[str, list[list[str]]] = field(default_factory=dict)
    log: list[str] = field(default_factory=list)        # edgenvr's last journal lines
    kernel_started_s: float = 0.0                       # from qemu's start, wall clock
    report_s: float = 0.0                               # first report line (the boot is done)

    def one(self, fact: str) -> list[str]:
        lines = self.facts.get(fact, [])
        assert len(lines) == 1, f"expected one {fact!r} line in the self-test report, got {lines}"
        return lines[0]

    def by_first(self, fact: str) -> dict[str, list[str]]:
        return {values[0]: values[1:] for values in self.facts.get(fact, []) if values}


@pytest.fixture(scope="module")
def built_image(tmp_path_factory: pytest.TempPathFactory) -> BuiltImage:
    if os.geteuid() != 0:
        pytest.fail("the image is built with mmdebstrap's root mode: run this test as root (CI does)")
    missing = [f"{tool} ({package})" for tool, package in TOOLS.items() if shutil.which(tool) is None]
    if missing or not OVMF_CODE.exists():
        pytest.fail(f"missing {', '.join(missing) or 'OVMF (ovmf)'}: scripts/setup test installs them")
    out = tmp_path_factory.mktemp("firmware")
    log = out / "build.log"
    with log.open("w") as stream:
        built = subprocess.run([str(BUILD), "--arch", "amd64", "--out", str(out), "--cache", str(CACHE)],
                               stdout=stream, stderr=subprocess.STDOUT, timeout=BUILD_TIMEOUT_S, check=False)
    if built.returncode != 0:
        pytest.fail(f"firmware/build failed (exit {built.returncode}):\n" + "\n".join(log.read_text().splitlines()[-40:]))
    report = json.loads((out / "build-report.json").read_text())
    return BuiltImage(out, Path(report["image"]), report)


def _partition_extent(image: Path, name: str) -> tuple[int, int]:
    """(offset, size) in bytes of the partition with this GPT name."""
    table = json.loads(subprocess.run(["sfdisk", "--json", str(image)], capture_output=True, text=True,
                                      check=True).stdout)["partitiontable"]
    partition = next(part for part in table["partitions"] if part.get("name") == name)
    sector = table.get("sectorsize", 512)
    return partition["start"] * sector, partition["size"] * sector


def _mtools(image: Path, *arguments: str) -> str:
    """An mtools command (mtype, mcopy, mdir) on the image's FAT boot partition (`::` is its root)."""
    command, *rest = arguments
    target = f"{image}@@{_partition_extent(image, 'edgenvr-boot')[0]}"
    return subprocess.run([command, "-i", target, *rest], capture_output=True, text=True, check=True,
                          env={**os.environ, "MTOOLS_SKIP_CHECK": "1"}).stdout


def _add_test_kernel_options(image: Path) -> None:
    """The boot entry on the image's FAT boot partition, with the test's options after the image's own."""
    entry = _mtools(image, "mtype", "::loader/entries/edgenvr.conf")
    assert re.search(r"^options .*root=PARTLABEL=edgenvr-root", entry, re.MULTILINE), entry
    changed = re.sub(r"^(options .*)$", rf"\1 {TEST_KERNEL_OPTIONS}", entry, flags=re.MULTILINE)
    replacement = image.parent / "edgenvr-test-entry.conf"
    replacement.write_text(changed)
    _mtools(image, "mcopy", "-o", str(replacement), "::loader/entries/edgenvr.conf")


def _kvm_usable() -> bool:
    """Whether KVM can even be opened here (a nested VM may still fail to run the guest: _boot falls back)."""
    try:
        descriptor = os.open("/dev/kvm", os.O_RDWR)
    except OSError:
        return False
    try:
        return fcntl.ioctl(descriptor, 0xAE00) == 12   # KVM_GET_API_VERSION
    except OSError:
        return False
    finally:
        os.close(descriptor)


SELFTEST_LINE = re.compile(r"edgenvr-selftest (\S+)(?: (.*))?$")
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def _boot(image: Path, accelerator: str, serial_log: Path) -> BootReport | None:
    """Boots the image and reads the self-test report from the serial port; None when KVM turns out not to
    work here (no kernel within KERNEL_START_TIMEOUT_S, or qemu's "KVM internal error")."""
    variables = image.parent / "OVMF_VARS.fd"
    shutil.copyfile(OVMF_VARS, variables)
    command = ["qemu-system-x86_64", "-machine", "q35", "-accel", accelerator,
               "-cpu", "host" if accelerator == "kvm" else "max", "-m", "2048", "-smp", "2",
               "-display", "none", "-monitor", "none", "-serial", "stdio", "-no-reboot",
               # A wired port with DHCP (qemu's own) that reaches nothing beyond the VM (restrict=on).
               "-nic", "user,model=virtio-net-pci,restrict=on",
               "-drive", f"if=pflash,format=raw,readonly=on,file={OVMF_CODE}",
               "-drive", f"if=pflash,format=raw,file={variables}",
               "-drive", f"file={image},format=raw,if=virtio",
               "-device", "i6300esb"]   # a hardware watchdog for systemd's RuntimeWatchdogSec=
    started = time.monotonic()
    report = BootReport(accelerator)
    lines: list[tuple[float, str]] = []
    arrived = threading.Condition()
    qemu = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)

    def read_serial() -> None:
        assert qemu.stdout is not None
        with serial_log.open("a") as copy:
            for raw in qemu.stdout:
                line = ANSI.sub("", raw.decode("utf-8", "replace")).rstrip("\r\n")
                copy.write(f"{time.monotonic() - started:7.1f} {line}\n")
                with arrived:
                    lines.append((time.monotonic() - started, line))
                    arrived.notify()
        with arrived:
            arrived.notify()

    reader = threading.Thread(target=read_serial, daemon=True)
    reader.start()
    seen = 0
    try:
        while True:
            with arrived:
                arrived.wait(timeout=1)
                fresh, seen = lines[seen:], len(lines)
            elapsed = time.monotonic() - started
            for at, line in fresh:
                if "KVM internal error" in line:
                    return None
                if not report.kernel_started_s and "Linux version" in line:
                    report.kernel_started_s = at
                match = SELFTEST_LINE.search(line)
                if match is None:
                    continue
                fact, rest = match.group(1), match.group(2) or ""
                report.report_s = report.report_s or at
                if fact == "end":
                    return report
                if fact == "edgenvr-log":
                    report.log.append(rest)
                else:
                    report.facts.setdefault(fact, []).append(rest.split())
            if accelerator == "kvm" and not report.kernel_started_s and elapsed > KERNEL_START_TIMEOUT_S:
                return None
            if qemu.poll() is not None and not reader.is_alive():
                pytest.fail(f"qemu exited ({qemu.returncode}) before the self-test report ended; serial log: "
                            f"{serial_log}\n" + "\n".join(serial_log.read_text().splitlines()[-30:]))
            if elapsed > REPORT_TIMEOUT_S:
                pytest.fail(f"no complete self-test report within {REPORT_TIMEOUT_S} s; serial log: {serial_log}\n"
                            + "\n".join(serial_log.read_text().splitlines()[-30:]))
    finally:
        qemu.kill()
        qemu.wait()
        reader.join(timeout=10)


@pytest.fixture(scope="module")
def booted(built_image: BuiltImage) -> Iterator[BootReport]:
    image = built_image.image
    os.truncate(image, DISK_BYTES)   # a larger card: the data partition must grow into it at the first boot
    _add_test_kernel_options(image)
    serial_log = built_image.out / "serial.log"
    forced = os.environ.get("EDGENVR_FIRMWARE_ACCEL")   # "kvm" or "tcg" to choose
    accelerators = [forced] if forced else (["kvm", "tcg"] if _kvm_usable() else ["tcg"])
    for accelerator in accelerators:
        report = _boot(image, accelerator, serial_log)
        if report is not None:
            break
    else:
        pytest.fail(f"KVM does not run the guest here; serial log: {serial_log}")
    figures = {"accelerator": report.accelerator, "image_bytes": built_image.report["image_bytes"],
               "image_allocated_bytes": built_image.report["image_allocated_bytes"],
               "rootfs_bytes": built_image.report["rootfs_bytes"],
               "root_squashfs_bytes": built_image.report["root_squashfs_bytes"],
               "build_seconds": built_image.report["seconds"],
               "qemu_start_to_kernel_s": round(report.kernel_started_s, 1),
               "kernel_to_edgenvr_active_s": _edgenvr_active_s(report),
               "qemu_start_to_report_s": round(report.report_s, 1)}
    (built_image.out / "figures.json").write_text(json.dumps(figures, indent=2))
    print(f"\nfirmware image figures: {json.dumps(figures)}")
    yield report


@dataclass
class ProvisionedBoot:
    report: BootReport
    boot_files: list[str]      # the boot partition's top-level names after the boot


@pytest.fixture(scope="module")
def provisioned(booted: BootReport, built_image: BuiltImage,
                tmp_path_factory: pytest.TempPathFactory) -> ProvisionedBoot:
    """The same disk booted again after the first boot's power cut, with edgenvr-provision.toml put on its boot
    partition as a technician would (the image's edgenvr-provision.service applies it)."""
    keys = tmp_path_factory.mktemp("technician")
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "technician@firmware-test",
                    "-f", str(keys / "id")], check=True)
    provision_file = keys / "edgenvr-provision.toml"
    provision_file.write_text(PROVISION_FILE.format(box_id=BOX_ID, key=(keys / "id.pub").read_text().strip()))
    image = built_image.image
    _mtools(image, "mcopy", str(provision_file), "::edgenvr-provision.toml")
    report = _boot(image, booted.accelerator, built_image.out / "serial-provisioned.log")
    assert report is not None, "the accelerator that booted the image once did not boot it again"
    listing = _mtools(image, "mdir", "-b", "::")
    print(f"\nfirmware image, provisioned second boot: qemu start to kernel {report.kernel_started_s:.1f} s, "
          f"kernel to edgenvr.service active {_edgenvr_active_s(report)} s, to the report {report.report_s:.1f} s")
    return ProvisionedBoot(report, [line.strip().removeprefix("::/") for line in listing.splitlines() if line.strip()])


def _edgenvr_active_s(report: BootReport) -> float | None:
    microseconds = report.facts.get("edgenvr-active-us", [["-"]])[0][0]
    return round(int(microseconds) / 1e6, 1) if microseconds.isdigit() else None


def test_boot_reaches_its_target_and_edgenvr_service_runs(booted: BootReport) -> None:
    assert booted.one("system") == ["running"], f"failed units: {booted.facts.get('failed-units')}"
    assert booted.one("failed-units") == ["-"]
    units = booted.by_first("unit")
    assert units["edgenvr.service"] == ["active", "enabled"], booted.log
    assert booted.one("edgenvr-restarts") == ["0"], booted.log
    assert (_edgenvr_active_s(booted) or 0) > 0
    assert booted.one("edgenvr-version")[0] == _checkout_version()


def test_data_partition_is_mounted_noatime_lazytime_and_grown_to_the_disk(booted: BootReport) -> None:
    fstype, options, source = booted.by_first("mount")["/var/lib/edgenvr"]
    assert fstype == "ext4" and "edgenvr-data" not in source   # a real partition of the disk, e.g. /dev/vda4
    assert {"noatime", "lazytime", "rw"} <= set(options.split(","))
    assert int(booted.one("disk-bytes")[0]) == DISK_BYTES
    partition = int(booted.one("data-partition-bytes")[0])
    filesystem = int(booted.one("data-filesystem-bytes")[0])
    # The image's data partition is 256 MiB; after the boot it reaches the end of the disk (the boot, root and
    # state partitions before it stay as they are) and its filesystem fills it.
    assert partition > DISK_BYTES - 1024**3, partition
    assert filesystem > 0.95 * partition, (filesystem, partition)
    units = booted.by_first("unit")
    assert units["systemd-repart.service"][0] == "active"
    assert units["systemd-growfs@var-lib-edgenvr.service"][0] == "active"


def test_root_is_read_only_and_only_state_survives_a_reboot(booted: BootReport) -> None:
    mounts = booted.by_first("mount")
    fstype, options, _ = mounts["/"]
    assert fstype == "squashfs" and options.split(",")[0] == "ro"
    assert booted.one("root-writable") == ["no"]
    assert mounts["/var"][0] == "tmpfs" and mounts["/tmp"][0] == "tmpfs"
    # /etc and /root: overlays whose changes (provisioning's) are kept on the state partition.
    assert mounts["/etc"][0] == "overlay" and mounts["/root"][0] == "overlay"
    assert mounts["/run/edgenvr-state"][0] == "ext4"
    assert mounts["/var/lib/systemd/timesync"][0] == "ext4"   # timesyncd's saved clock, on the state partition


def test_what_etc_gets_and_the_saved_clock_survive_a_power_cut(booted: BootReport, built_image: BuiltImage,
                                                              tmp_path: Path) -> None:
    """qemu was killed after the report, as a power cut would: what the boot wrote through the /etc overlay (the
    machine id, made at the first boot) and timesyncd's clock file are on the state partition."""
    offset, size = _partition_extent(built_image.image, "edgenvr-state")
    state = tmp_path / "state.ext4"
    with built_image.image.open("rb") as disk, state.open("wb") as copy:
        disk.seek(offset)
        copy.write(disk.read(size))

    def debugfs(request: str) -> str:
        return subprocess.run(["debugfs", "-R", request, str(state)], capture_output=True, text=True,
                              check=True).stdout

    assert re.fullmatch(r"[0-9a-f]{32}\n", debugfs("cat /etc-upper/machine-id"))
    assert "Type: regular" in debugfs("stat /timesync/clock")


def test_journal_in_ram_watchdog_armed_and_time_synchronisation_on(booted: BootReport) -> None:
    assert booted.one("journal-dirs") == ["/run/log/journal"]
    assert set(booted.one("journal-config")[0].split(",")) == {"Storage=volatile", "RuntimeMaxUse=32M"}
    watchdogs = booted.by_first("watchdog")
    assert any(values[0] == "active" for values in watchdogs.values()), watchdogs
    assert booted.one("watchdog-pid1") == ["15s"]
    assert booted.by_first("unit")["systemd-timesyncd.service"] == ["active", "enabled"]
    assert "NTP=yes" in booted.one("timesync")[0]


def test_no_password_anywhere_and_ssh_off_until_provisioned(booted: BootReport, built_image: BuiltImage) -> None:
    assert booted.one("password-accounts") == ["-"]
    assert booted.one("root-password") == ["L"]
    assert booted.by_first("unit")["ssh.service"] == ["inactive", "disabled"]
    # Nothing listens beyond the box itself but the web UI (its setup page until provisioned): no SSH, no
    # LLMNR or mDNS responder.
    listening = booted.one("listening-tcp")[0].split(",")
    exposed = {entry.split("/")[0] for entry in listening if entry.endswith("/any")}
    assert exposed == {"8443"}, (listening, booted.log)
    rootfs = built_image.out / "rootfs"
    assert not list((rootfs / "etc" / "ssh").glob("ssh_host_*")), "an SSH host key every box would share"
    assert (rootfs / "etc" / "ssh" / "sshd_not_to_be_run").exists()
    shadow = (rootfs / "etc" / "shadow").read_text().splitlines()
    assert [line for line in shadow if not line.split(":")[1].startswith(("!", "*"))] == []


def _checkout_version() -> str:
    match = re.search(r'^version = "([^"]+)"', (REPO / "pyproject.toml").read_text(), re.MULTILINE)
    assert match is not None
    return match.group(1)


def test_provisioning_file_is_applied_once_on_the_read_only_image(provisioned: ProvisionedBoot) -> None:
    report = provisioned.report
    assert report.one("system") == ["running"], report.facts.get("failed-units")
    # Applied and erased, with no error file beside it.
    assert "edgenvr-provision.toml" not in provisioned.boot_files, provisioned.boot_files
    assert "edgenvr-provision.error" not in provisioned.boot_files, provisioned.boot_files
    # The config it wrote (through the /etc overlay) is the one edgenvr.service runs with.
    assert report.by_first("unit")["edgenvr.service"] == ["active", "enabled"], report.log
    assert any(f"box {BOX_ID} " in line for line in report.log), report.log
    assert report.one("timezone") == ["Asia/Jakarta"]
    # SSH: enabled by provisioning, so on, for keys only; nothing else changed about what listens.
    assert report.by_first("unit")["ssh.service"] == ["active", "enabled"]
    exposed = {entry.split("/")[0] for entry in report.one("listening-tcp")[0].split(",") if entry.endswith("/any")}
    assert exposed == {"22", "8443"}, report.one("listening-tcp")
    assert report.one("password-accounts") == ["-"]


def test_second_boot_keeps_the_recordings_partition_and_the_read_only_root(provisioned: ProvisionedBoot) -> None:
    report = provisioned.report
    fstype, options, _ = report.by_first("mount")["/var/lib/edgenvr"]
    assert fstype == "ext4" and {"noatime", "lazytime"} <= set(options.split(","))
    assert int(report.one("data-partition-bytes")[0]) > DISK_BYTES - 1024**3
    # The index the first boot created is found again, not made anew.
    assert any("reconcile: index and disk agree" in line for line in report.log), report.log
    assert not any("created index" in line for line in report.log), report.log
    assert report.by_first("mount")["/"][1].split(",")[0] == "ro"
    assert report.one("root-writable") == ["no"]
