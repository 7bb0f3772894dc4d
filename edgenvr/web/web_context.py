"""What the web process's handlers share: the config, the data layout, the clock, and the one thread that
writes the box's small admin files (user accounts, the audit trail, holds).

Invariants:
- Every write to users.sqlite3, audit.sqlite3 and the index's holds goes through `write_thread` (one worker:
  writes are serialised and SQLite connections stay in the thread that made them). The event loop never
  waits on a disk write or an Argon2 hash, so a slow disk or a burst of logins never stalls other clients.
- Reads of the index open their own read-only connection in the default thread pool (WAL: readers never
  block the supervisor's writer, and a long read never holds a transaction across requests).
- Nothing here is shared with the recorder or the supervisor: the web process only reads the index and
  writes what is its own (accounts, audit records, holds in short transactions like `edgenvr hold`).
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

from edgenvr.config.records import Config
from edgenvr.core.clock import SYSTEM_CLOCK, Clock
from edgenvr.evidence.audit import AuditAction, AuditTrail
from edgenvr.evidence.identity import DeviceIdentity, device_identity
from edgenvr.index.queries import open_readonly
from edgenvr.storage.layout import StorageLayout
from edgenvr.web.accounts import Accounts
from edgenvr.web.request_values import camera_id

T = TypeVar("T")


class AdminWrites:
    """The one thread that writes a web server's small admin files, user accounts and the audit trail (the box's
    web process and the hub's). A subclass has `layout`, `clock` and `identity` (the key that signs the trail)
    and calls `start_writes` once."""

    layout: StorageLayout
    clock: Clock

    def start_writes(self, thread_name: str) -> None:
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix=thread_name)
        self._accounts: Accounts | None = None
        self._audit: AuditTrail | None = None

    async def write(self, action: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._writer, action, *args)

    @property
    def accounts(self) -> Accounts:
        """Only from inside `write(...)`: the accounts store of the write thread."""
        if self._accounts is None:
            self._accounts = Accounts(self.layout, self.clock)
        return self._accounts

    def audit_now(self, actor: str, action: AuditAction, **fields: Any) -> None:
        """Append an audit record (in the write thread). AuditError/OSError/sqlite3.Error propagate: the
        caller refuses the action it was about to take."""
        if self._audit is None:
            self._audit = AuditTrail(self.layout, self.identity, self.clock)   # type: ignore[attr-defined]
        self._audit.append(actor, action, **fields)

    async def audit(self, actor: str, action: AuditAction, **fields: Any) -> None:
        await self.write(lambda: self.audit_now(actor, action, **fields))

    def close(self) -> None:
        def close_stores() -> None:
            for store in (self._accounts, self._audit):
                if store is not None:
                    store.close()
        self._writer.submit(close_stores).result()
        self._writer.shutdown(wait=True)


@dataclass
class WebContext(AdminWrites):
    config: Config
    clock: Clock = SYSTEM_CLOCK
    tls: bool = True
    layout: StorageLayout = field(init=False)
    _identity: DeviceIdentity | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        self.layout = StorageLayout(self.config.storage.data_dir)
        self.start_writes("web-writer")

    @property
    def identity(self) -> DeviceIdentity:
        if self._identity is None:
            self._identity = device_identity(self.layout, self.config.box.box_id, self.config.box.box_name)
        return self._identity

    def requested_camera(self, raw: str) -> str:
        """A camera a request names (path or query): one of the box's camera ids, or 400."""
        return camera_id(raw)

    # --- reads of the index ---

    async def read(self, query: Callable[..., T], *args: Any) -> T:
        """Run `query(conn, *args)` on a fresh read-only index connection in the thread pool."""
        def run() -> T:
            with self.index() as conn:
                return query(conn, *args)
        return await asyncio.to_thread(run)

    @contextmanager
    def index(self) -> Iterator[sqlite3.Connection]:
        conn = open_readonly(self.layout)
        try:
            yield conn
        finally:
            conn.close()
