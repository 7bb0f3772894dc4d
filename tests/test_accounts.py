"""The box's user accounts (web.accounts): roles and camera grants decide what a user may do; a wrong password
and an unknown user look alike; 20 wrong passwords lock an account for 15 minutes; tokens work until revoked
and sessions until they expire or end, and neither is ever stored as itself; the last admin stays; two
processes adding users at once lose none; a file that is not an accounts file is refused with a message.

Real SQLite files in tmp_path, the real Argon2id hasher, a SimulatedClock for lockouts and expiries.
"""

from __future__ import annotations

import itertools
import multiprocessing
import sqlite3
import stat
import time
from collections.abc import Iterator
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Event
from pathlib import Path

import pytest
from argon2 import PasswordHasher

from edgenvr.core.clock import SimulatedClock
from edgenvr.core.units import DAY_MS, HOUR_MS, MINUTE_MS
from edgenvr.storage.layout import StorageLayout
from edgenvr.web.accounts import (
    LOCKOUT_MS,
    MAX_FAILURES,
    ROLE_PERMISSIONS,
    SESSION_IDLE_MS,
    SESSION_MAX_MS,
    AccountError,
    Accounts,
    LoginOutcome,
    Permission,
    Role,
    User,
)

PASSWORD = "kopi tubruk 1987"
START_MS = 1_764_547_200_000   # 2025-12-01 00:00 UTC


@pytest.fixture
def layout(tmp_path: Path) -> StorageLayout:
    (tmp_path / "data").mkdir()
    return StorageLayout(tmp_path / "data")


@pytest.fixture
def clock() -> SimulatedClock:
    return SimulatedClock(START_MS)


@pytest.fixture
def accounts(layout: StorageLayout, clock: SimulatedClock) -> Iterator[Accounts]:
    with Accounts(layout, clock) as opened:
        opened.add_user("ani", Role.ADMIN, PASSWORD)
        opened.add_user("budi", Role.VIEWER, PASSWORD, ("gate",))
        yield opened


def stored_bytes(layout: StorageLayout) -> bytes:
    """Everything SQLite has on the disk for the accounts: the file, its WAL, its shared memory."""
    return b"".join(path.read_bytes() for path in layout.data_dir.glob("users.sqlite3*"))


# -- roles and grants ----------------------------------------------------------------------------------------

def test_each_role_grants_its_permissions_and_no_more() -> None:
    assert ROLE_PERMISSIONS[Role.VIEWER] == {Permission.VIEW}
    assert ROLE_PERMISSIONS[Role.OPERATOR] == {Permission.VIEW, Permission.EXPORT, Permission.HOLD,
                                               Permission.READ_METRICS}
    assert ROLE_PERMISSIONS[Role.ADMIN] == set(Permission)
    operator = User("citra", Role.OPERATOR, None, START_MS, None)
    assert operator.may(Permission.EXPORT) and operator.may(Permission.HOLD)
    assert not operator.may(Permission.MANAGE_USERS) and not operator.may(Permission.READ_AUDIT)
    assert not operator.may(Permission.APPROVE_REFERENCE)


def test_a_user_sees_the_cameras_granted_all_or_none(accounts: Accounts) -> None:
    everything = accounts.add_user("citra", Role.OPERATOR, PASSWORD)
    nothing = accounts.add_user("dewi", Role.VIEWER, PASSWORD, ())
    budi = accounts.user("budi")
    assert budi is not None and budi.cameras == ("gate",)
    assert budi.may_see("gate") and not budi.may_see("yard")
    assert everything.cameras is None and everything.may_see("yard")
    assert nothing.cameras == () and not nothing.may_see("gate")
    moved = accounts.set_role("budi", Role.OPERATOR, ("yard", "gate", "yard"))
    assert moved.cameras == ("gate", "yard") and moved.may(Permission.EXPORT)
    assert accounts.user("budi") == moved


@pytest.mark.parametrize("role, cameras, says", [
    (Role.ADMIN, ("gate",), "admin sees every camera"),
    (Role.VIEWER, ("../etc",), "not a camera id"),
    (Role.VIEWER, ("Gate",), "not a camera id"),
    ("superuser", None, "no role"),
])
def test_a_grant_that_cannot_be_is_refused(accounts: Accounts, role: Role, cameras: tuple[str, ...] | None,
                                           says: str) -> None:
    with pytest.raises(AccountError, match=says):
        accounts.add_user("citra", role, PASSWORD, cameras)
    assert accounts.user("citra") is None


@pytest.mark.parametrize("name, password, says", [
    ("Ani2", PASSWORD, "not a user name"),
    ("-ani", PASSWORD, "not a user name"),
    ("a" * 33, PASSWORD, "not a user name"),
    ("ani\n", PASSWORD, "not a user name"),
    ("citra", "short pw1", "too short"),
    ("citra", "x" * 1025, "too long"),
    ("citra.kasir", "Citra.Kasir", "must not be the user name"),
    ("citra", "bytes \udcff undecodable", "not valid text"),
])
def test_bad_names_and_passwords_are_refused_without_showing_the_password(
        accounts: Accounts, name: str, password: str, says: str) -> None:
    with pytest.raises(AccountError, match=says) as refused:
        accounts.add_user(name, Role.VIEWER, password)
    assert password not in str(refused.value)
    assert [user.name for user in accounts.users()] == ["ani", "budi"]


def test_a_user_name_is_unique(accounts: Accounts) -> None:
    with pytest.raises(AccountError, match="exists"):
        accounts.add_user("budi", Role.ADMIN, "another password")
    assert accounts.user("budi").role is Role.VIEWER   # type: ignore[union-attr]


# -- passwords and lockout ----------------------------------------------------------------------------------

def test_the_right_password_logs_in_and_a_wrong_one_or_an_unknown_user_does_not(accounts: Accounts) -> None:
    good = accounts.check_password("budi", PASSWORD)
    assert good.outcome is LoginOutcome.OK and good.user == accounts.user("budi")
    assert accounts.check_password("Budi ", PASSWORD).outcome is LoginOutcome.OK   # as a phone types it
    wrong = accounts.check_password("budi", PASSWORD + "!")
    unknown = accounts.check_password("zaki", PASSWORD)
    assert (wrong.outcome, wrong.user, unknown.outcome, unknown.user) == (
        LoginOutcome.WRONG, None, LoginOutcome.WRONG, None)
    for nonsense in ("", "../etc", "x" * 5000):
        assert accounts.check_password(nonsense, nonsense).outcome is LoginOutcome.WRONG


def test_an_unknown_user_takes_as_long_as_a_wrong_password(accounts: Accounts) -> None:
    def fastest(name: str) -> float:
        times = []
        for _ in range(5):
            started = time.perf_counter()
            accounts.check_password(name, "not the password")
            times.append(time.perf_counter() - started)
        return min(times)

    wrong, unknown = fastest("budi"), fastest("zaki")
    print(f"wrong password {wrong * 1000:.1f} ms, unknown user {unknown * 1000:.1f} ms")
    assert unknown > 0.6 * wrong and wrong > 0.005   # both are a real Argon2id check


def test_passwords_are_stored_as_argon2id_with_the_pi_sized_parameters(accounts: Accounts,
                                                                        layout: StorageLayout) -> None:
    with sqlite3.connect(layout.users_path) as conn:
        hashes = dict(conn.execute("SELECT name, password_hash FROM users"))
    assert all(h.startswith("$argon2id$v=19$m=19456,t=2,p=1$") for h in hashes.values()), hashes
    assert hashes["ani"] != hashes["budi"]   # salted: the same password, two hashes
    assert PASSWORD.encode() not in stored_bytes(layout)


def test_a_hash_made_with_other_parameters_is_rehashed_at_the_next_login(accounts: Accounts,
                                                                          layout: StorageLayout) -> None:
    old = PasswordHasher(time_cost=1, memory_cost=8192, parallelism=1).hash(PASSWORD)
    with sqlite3.connect(layout.users_path) as conn:
        conn.execute("UPDATE users SET password_hash = ? WHERE name = 'budi'", (old,))
    assert accounts.check_password("budi", PASSWORD).outcome is LoginOutcome.OK
    with sqlite3.connect(layout.users_path) as conn:
        (rehashed,) = conn.execute("SELECT password_hash FROM users WHERE name = 'budi'").fetchone()
    assert rehashed.startswith("$argon2id$v=19$m=19456,t=2,p=1$")
    assert accounts.check_password("budi", PASSWORD).outcome is LoginOutcome.OK


def lock(accounts: Accounts, name: str) -> int:
    """Guess wrong until the account locks; returns when the lock ends."""
    for attempt in range(1, MAX_FAILURES):
        result = accounts.check_password(name, f"guess number {attempt}")
        assert (result.outcome, result.failures, result.just_locked) == (LoginOutcome.WRONG, attempt, False)
    locking = accounts.check_password(name, "the last guess")
    assert locking.outcome is LoginOutcome.LOCKED and locking.just_locked and locking.failures == MAX_FAILURES and locking.locked_until_ms is not None
    return locking.locked_until_ms


def test_twenty_wrong_passwords_lock_the_account_for_fifteen_minutes(accounts: Accounts,
                                                                     clock: SimulatedClock) -> None:
    locked_until = lock(accounts, "budi")
    assert MAX_FAILURES == 20 and LOCKOUT_MS == 15 * MINUTE_MS
    assert locked_until == clock.now_ms() + 15 * MINUTE_MS
    refused = accounts.check_password("budi", PASSWORD)   # the right password does not open a locked account
    assert (refused.outcome, refused.user, refused.just_locked) == (LoginOutcome.LOCKED, None, False)
    assert accounts.user("budi").locked_until_ms == locked_until   # type: ignore[union-attr]
    assert accounts.check_password("ani", PASSWORD).outcome is LoginOutcome.OK   # other accounts are not locked
    clock.advance(15 * 60 - 1)
    assert accounts.check_password("budi", PASSWORD).outcome is LoginOutcome.LOCKED
    clock.advance(1)
    assert accounts.user("budi").locked_until_ms is None   # type: ignore[union-attr]
    assert accounts.check_password("budi", PASSWORD).outcome is LoginOutcome.OK


def test_after_a_lock_another_twenty_guesses_are_needed(accounts: Accounts, clock: SimulatedClock) -> None:
    lock(accounts, "budi")
    clock.advance(15 * 60)
    assert lock(accounts, "budi") == clock.now_ms() + LOCKOUT_MS


def test_a_good_login_resets_the_count(accounts: Accounts) -> None:
    for _ in range(MAX_FAILURES - 1):
        accounts.check_password("budi", "a wrong guess")
    assert accounts.check_password("budi", PASSWORD).outcome is LoginOutcome.OK
    again = [accounts.check_password("budi", "a wrong guess") for _ in range(MAX_FAILURES - 1)]
    assert again[-1].failures == MAX_FAILURES - 1 and not any(r.outcome is LoginOutcome.LOCKED for r in again)


def test_a_new_password_clears_a_lock(accounts: Accounts) -> None:
    lock(accounts, "budi")
    accounts.set_password("budi", "a brand new password")
    assert accounts.check_password("budi", PASSWORD).outcome is LoginOutcome.WRONG
    assert accounts.check_password("budi", "a brand new password").outcome is LoginOutcome.OK


def test_a_clock_set_back_does_not_stretch_a_lock(accounts: Accounts, clock: SimulatedClock) -> None:
    lock(accounts, "budi")
    clock.step_wall_ms(-365 * DAY_MS)   # a wrong NTP answer or a technician: the lock does not last a year
    assert accounts.check_password("budi", PASSWORD).outcome is LoginOutcome.OK


# -- tokens ---------------------------------------------------------------------------------------------------

def test_a_token_works_until_revoked_and_only_its_hash_is_stored(accounts: Accounts, layout: StorageLayout,
                                                                  clock: SimulatedClock) -> None:
    token, secret = accounts.create_token("budi", "phone app")
    assert secret.startswith("envr_") and len(secret) > 40
    assert (token.user, token.label, token.created_ms, token.last_used_ms, token.revoked_ms) == (
        "budi", "phone app", clock.now_ms(), None, None)
    assert accounts.user_for_token(secret) == accounts.user("budi")
    assert secret.encode() not in stored_bytes(layout) and secret[5:].encode() not in stored_bytes(layout)
    assert secret not in repr(token) and secret not in repr(accounts.tokens())
    for wrong in (secret[:-1], secret + "x", "envr_", "", secret[5:], "envr_" + "a" * 500):
        assert accounts.user_for_token(wrong) is None
    revoked = accounts.revoke_token(token.id)
    assert revoked.revoked_ms == clock.now_ms() and accounts.tokens("budi") == [revoked]
    assert accounts.user_for_token(secret) is None
    assert accounts.revoke_token(token.id) == revoked   # again: no change
    with pytest.raises(AccountError, match="no token 99"):
        accounts.revoke_token(99)


def test_a_tokens_last_use_is_written_at_most_once_a_minute(accounts: Accounts, clock: SimulatedClock) -> None:
    _, secret = accounts.create_token("budi", "nightly backup script")
    first = clock.now_ms()
    accounts.user_for_token(secret)
    clock.advance(30)
    accounts.user_for_token(secret)
    assert accounts.tokens("budi")[0].last_used_ms == first
    clock.advance(31)
    accounts.user_for_token(secret)
    assert accounts.tokens("budi")[0].last_used_ms == first + 61_000


def test_the_token_of_a_removed_user_is_dead_even_if_the_name_comes_back(accounts: Accounts) -> None:
    _, secret = accounts.create_token("budi", "phone app")
    accounts.remove_user("budi")
    assert accounts.user_for_token(secret) is None and accounts.user("budi") is None
    assert accounts.tokens("budi")[0].revoked_ms is not None
    accounts.add_user("budi", Role.ADMIN, "another budi's password")
    assert accounts.user_for_token(secret) is None


@pytest.mark.parametrize("label", ["", " ", "x" * 81, "tab\there", "new\nline"])
def test_a_token_label_must_be_short_printable_text(accounts: Accounts, label: str) -> None:
    with pytest.raises(AccountError, match="label"):
        accounts.create_token("budi", label)
    assert accounts.tokens() == []


def test_a_token_needs_a_user(accounts: Accounts) -> None:
    with pytest.raises(AccountError, match="no user zaki"):
        accounts.create_token("zaki", "phone app")


# -- sessions ------------------------------------------------------------------------------------------------

def test_a_session_ends_after_twelve_idle_hours_and_slides_while_used(accounts: Accounts,
                                                                     clock: SimulatedClock) -> None:
    assert SESSION_IDLE_MS == 12 * HOUR_MS
    session_id, session = accounts.start_session("budi")
    assert session.user == accounts.user("budi") and session.expires_ms == clock.now_ms() + SESSION_IDLE_MS
    assert session.csrf_token not in repr(session) and session_id not in repr(session)
    clock.advance(11 * 3600)
    used = accounts.session(session_id)
    assert used is not None and used.csrf_token == session.csrf_token
    assert used.expires_ms == clock.now_ms() + SESSION_IDLE_MS   # slid on
    clock.advance(12 * 3600 - 1)
    assert accounts.session(session_id) is not None
    clock.advance(12 * 3600)
    assert accounts.session(session_id) is None
    assert accounts.session(session_id) is None   # gone for good, not just expired for now


def test_a_session_ends_seven_days_after_login_however_much_it_is_used(accounts: Accounts,
                                                                      clock: SimulatedClock) -> None:
    assert SESSION_MAX_MS == 7 * DAY_MS
    session_id, _ = accounts.start_session("budi")
    login_ms = clock.now_ms()
    for _ in range(7 * 24 - 1):
        clock.advance(3600)
        assert accounts.session(session_id) is not None
    clock.advance(3600)
    assert clock.now_ms() == login_ms + SESSION_MAX_MS
    assert accounts.session(session_id) is None


def test_logout_a_new_password_and_removal_end_sessions(accounts: Accounts, layout: StorageLayout) -> None:
    first, _ = accounts.start_session("budi")
    second, _ = accounts.start_session("budi")
    admins, _ = accounts.start_session("ani")
    assert first.encode() not in stored_bytes(layout)
    accounts.end_session(first)
    accounts.end_session(first)   # twice: no error
    assert accounts.session(first) is None and accounts.session(second) is not None
    accounts.set_password("budi", "a brand new password")
    assert accounts.session(second) is None and accounts.session(admins) is not None
    third, _ = accounts.start_session("budi")
    accounts.remove_user("budi")
    assert accounts.session(third) is None
    for nonsense in ("", "x" * 1000, "not a session"):
        assert accounts.session(nonsense) is None


def test_a_session_shows_the_users_role_as_it_is_now(accounts: Accounts) -> None:
    session_id, _ = accounts.start_session("budi")
    accounts.set_role("budi", Role.OPERATOR, None)
    now = accounts.session(session_id)
    assert now is not None and now.user.may(Permission.EXPORT) and now.user.cameras is None


# -- admins ------------------------------------------------------------------------------------------------

def test_the_last_admin_can_be_neither_removed_nor_demoted(accounts: Accounts) -> None:
    assert accounts.has_admin()
    with pytest.raises(AccountError, match="last admin"):
        accounts.remove_user("ani")
    with pytest.raises(AccountError, match="last admin"):
        accounts.set_role("ani", Role.OPERATOR, None)
    assert accounts.user("ani").role is Role.ADMIN   # type: ignore[union-attr]
    accounts.set_role("budi", Role.ADMIN, None)
    accounts.remove_user("ani")
    assert [user.name for user in accounts.users()] == ["budi"] and accounts.has_admin()
    with pytest.raises(AccountError, match="no user ani"):
        accounts.remove_user("ani")


# -- the file ------------------------------------------------------------------------------------------------

def test_the_file_appears_at_the_first_change_readable_by_the_service_alone(layout: StorageLayout,
                                                                          clock: SimulatedClock) -> None:
    with Accounts(layout, clock) as accounts:
        assert accounts.users() == [] and not accounts.has_admin() and accounts.user("ani") is None
        assert accounts.session("whatever") is None and accounts.tokens() == []
        assert not layout.users_path.exists()
        accounts.add_user("ani", Role.ADMIN, PASSWORD)
        assert stat.S_IMODE(layout.users_path.stat().st_mode) == 0o600
        for companion in layout.data_dir.glob("users.sqlite3-*"):
            assert stat.S_IMODE(companion.stat().st_mode) == 0o600, companion
    with Accounts(layout, clock) as reopened, sqlite3.connect(layout.users_path) as conn:
        assert [user.name for user in reopened.users()] == ["ani"]
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 2   # 2: the setup code's table


def test_a_users_file_that_is_not_sqlite_is_refused_with_a_message(layout: StorageLayout) -> None:
    layout.users_path.write_bytes(b"name,password\nani,hunter2hunter2\n" * 100)
    with pytest.raises(AccountError, match=r"users\.sqlite3 cannot be used .*not a database"):
        Accounts(layout)
    assert layout.users_path.read_bytes().startswith(b"name,password")


def test_a_file_from_a_newer_edgenvr_is_refused(layout: StorageLayout) -> None:
    with sqlite3.connect(layout.users_path) as conn:
        conn.execute("PRAGMA user_version = 99")
    with pytest.raises(AccountError, match="newer edgenvr"):
        Accounts(layout)


def test_a_missing_data_directory_is_an_error_not_a_new_one(tmp_path: Path) -> None:
    layout = StorageLayout(tmp_path / "unmounted-disk")
    with Accounts(layout) as accounts:
        assert accounts.users() == []
        with pytest.raises(AccountError, match="does not exist"):
            accounts.add_user("ani", Role.ADMIN, PASSWORD)
    assert not layout.data_dir.exists()


def test_a_file_replaced_while_open_is_followed(accounts: Accounts, layout: StorageLayout,
                                                tmp_path: Path) -> None:
    """An administrator who moves the file aside (to start over) is not written into the moved copy."""
    for path in layout.data_dir.glob("users.sqlite3*"):
        path.rename(tmp_path / path.name)
    assert accounts.users() == [] and not accounts.has_admin()
    accounts.add_user("citra", Role.ADMIN, PASSWORD)
    assert [user.name for user in Accounts(layout).users()] == ["citra"]


def _add_users(data_dir: str, prefix: str, count: int, ready: Queue[str], start: Event) -> None:
    with Accounts(StorageLayout(Path(data_dir))) as accounts:
        ready.put(prefix)
        start.wait(60)
        for number in range(count):
            accounts.add_user(f"{prefix}{number:02d}", Role.VIEWER, f"password of {prefix}{number}")


@pytest.mark.slow
def test_two_processes_adding_users_at_once_lose_none(layout: StorageLayout) -> None:
    """The web server and the CLI at once, from an accounts file neither has made yet."""
    context = multiprocessing.get_context("spawn")
    ready: Queue[str] = context.Queue()
    start = context.Event()
    writers = [context.Process(target=_add_users, args=(str(layout.data_dir), prefix, 50, ready, start))
               for prefix in ("web", "cli")]
    for writer in writers:
        writer.start()
    for _ in writers:
        ready.get(timeout=60)
    start.set()
    for writer in writers:
        writer.join(120)
    assert [writer.exitcode for writer in writers] == [0, 0]
    users = Accounts(layout).users()
    assert sorted(user.name for user in users) == sorted(f"{p}{n:02d}" for p in ("cli", "web") for n in range(50))
    by_time = [user.name[:3] for user in sorted(users, key=lambda user: user.created_ms)]
    turns = 1 + sum(1 for earlier, later in itertools.pairwise(by_time) if earlier != later)
    print(f"100 users from two processes, in {turns} turns")
    assert turns >= 3, "the two writers did not overlap: the test proved nothing"
    with sqlite3.connect(layout.users_path) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
