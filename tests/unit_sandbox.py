"""Runs a command under the parts of edgenvr.service's sandbox that work without systemd as PID 1, for
tests/test_systemd_unit.py: the unit's system-call allow list (SystemCallFilter=, SystemCallErrorNumber=,
with RestrictAddressFamilies= on socket(2)) loaded with libseccomp, the library systemd itself uses, and
MemoryDenyWriteExecute= as the kernel's own W^X rule (PR_SET_MDWE, Linux 6.3+), which refuses writable
executable mappings and making a mapping executable later, as systemd's filter does. Both hold for every
process the command starts. The caller sets no_new_privs (setpriv), which loading a filter requires.

Differences from systemd: a refused socket family fails with the filter's errno, not EAFNOSUPPORT; systemd's
MemoryDenyWriteExecute= also refuses mprotect() asking for PROT_EXEC on a mapping that is already
executable, which the kernel rule allows (the dynamic loader does not do that for ordinary libraries).

Usage: python unit_sandbox.py RULES_JSON -- COMMAND...   where RULES_JSON is
{"syscalls": [names], "errno": 1, "address_families": ["AF_INET", ...]}. Exits 126 with a message on stderr
when the sandbox cannot be set up (the command is then not run).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import os
import socket
import sys

PR_SET_MDWE = 65
PR_MDWE_REFUSE_EXEC_GAIN = 1
SCMP_ACT_ALLOW = 0x7FFF0000
SCMP_CMP_EQ = 4
NR_SCMP_ERROR = -1


def scmp_act_errno(number: int) -> int:
    return 0x00050000 | (number & 0xFFFF)


class ArgCompare(ctypes.Structure):  # struct scmp_arg_cmp
    _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int), ("datum_a", ctypes.c_uint64),
                ("datum_b", ctypes.c_uint64)]


def _fail(message: str) -> None:
    print(f"unit_sandbox: {message}", file=sys.stderr)
    raise SystemExit(126)


def deny_write_execute() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN, 0, 0, 0) != 0:
        _fail(f"PR_SET_MDWE: {os.strerror(ctypes.get_errno())} (needs Linux 6.3 or later)")


def load_syscall_filter(syscalls: list[str], errno_number: int, address_families: list[str]) -> None:
    name = ctypes.util.find_library("seccomp")
    if name is None:
        _fail("libseccomp not found (Debian package libseccomp2, a dependency of systemd)")
    lib = ctypes.CDLL(name)
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_rule_add.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint]
    lib.seccomp_rule_add_array.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint,
                                           ctypes.POINTER(ArgCompare)]
    lib.seccomp_load.argtypes = [ctypes.c_void_p]
    context = lib.seccomp_init(scmp_act_errno(errno_number))
    if not context:
        _fail("seccomp_init failed")
    for syscall in syscalls:
        number = lib.seccomp_syscall_resolve_name(syscall.encode())
        if number == NR_SCMP_ERROR:
            continue  # a name of another architecture (e.g. clock_adjtime64 on x86-64)
        if syscall == "socket" and address_families:
            for family in address_families:
                compare = ArgCompare(0, SCMP_CMP_EQ, int(getattr(socket, family)), 0)
                if lib.seccomp_rule_add_array(context, SCMP_ACT_ALLOW, number, 1, ctypes.byref(compare)) != 0:
                    _fail(f"cannot allow socket({family})")
            continue
        result = lib.seccomp_rule_add(context, SCMP_ACT_ALLOW, number, 0)
        if result != 0 and number >= 0:  # negative: a multiplexed pseudo-call this architecture lacks
            _fail(f"cannot allow {syscall}: {os.strerror(-result)}")
    result = lib.seccomp_load(context)
    if result != 0:
        _fail(f"seccomp_load: {os.strerror(-result)}")


def main(argv: list[str]) -> None:
    if len(argv) < 3 or argv[1] != "--":
        _fail("usage: unit_sandbox.py RULES_JSON -- COMMAND...")
    rules = json.loads(argv[0])
    deny_write_execute()
    load_syscall_filter(rules["syscalls"], rules["errno"], rules["address_families"])
    os.execvp(argv[2], argv[2:])


if __name__ == "__main__":
    main(sys.argv[1:])
