"""The hub's configuration file (`edgenvr hub --config HUB.toml`) and every path under its data directory.

```toml
[hub]
listen = "0.0.0.0:8443"
tls = true                      # HTTPS with the hub's own certificate; false behind a reverse proxy
data_dir = "/var/lib/edgenvr-hub"
# database_url = "postgresql://edgenvr@db/edgenvr"   (default: SQLite in data_dir)
# workers = 1                   # > 1: that many gunicorn workers (aiohttp's), which needs PostgreSQL
# max_clip_mb = 2048            # the largest clip a box may upload
```

Owns: parsing (tomllib) and checking it, each problem named with its key; the paths (one source of truth).
Failure paths: a missing file, bad TOML, an unknown key, a value of the wrong type or out of range, several
workers on SQLite (one file cannot be shared by processes the way the hub's workers share their database) ->
HubConfigError with every problem found, one per line.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgenvr.config.records import split_listen

DEFAULT_LISTEN = "0.0.0.0:8443"
DEFAULT_MAX_CLIP_MB = 2048
MAX_WORKERS = 64


class HubConfigError(Exception):
    """The hub's config cannot be used; the message lists each problem."""


@dataclass(frozen=True)
class HubConfig:
    host: str
    port: int
    tls: bool
    data_dir: Path
    database_url: str | None
    max_clip_bytes: int
    workers: int = 1   # 1: one process (serve_hub); more: a gunicorn master and its workers (hub_workers)

    @property
    def blobs_dir(self) -> Path:
        return self.data_dir / "blobs"

    @property
    def clips_dir(self) -> Path:
        return self.blobs_dir / "clips"

    @property
    def keys_dir(self) -> Path:
        return self.data_dir / "keys"

    @property
    def receipt_key_path(self) -> Path:   # signs receipts; boxes learn its public half at enrolment
        return self.keys_dir / "hub.key"

    @property
    def receipt_public_key_path(self) -> Path:
        return self.keys_dir / "hub.pub"

    @property
    def tls_key_path(self) -> Path:
        return self.keys_dir / "tls.key"

    @property
    def tls_certificate_path(self) -> Path:
        return self.keys_dir / "tls.crt"


def load_hub_config(path: str | Path) -> HubConfig:
    try:
        raw = tomllib.loads(Path(path).read_text())
    except OSError as exc:
        raise HubConfigError(f"{path}: cannot read it: {exc.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise HubConfigError(f"{path}: not valid TOML: {exc}") from None
    problems: list[str] = []
    unknown = sorted(set(raw) - {"hub"})
    if unknown:
        problems.append(f"unknown table(s): {', '.join(unknown)} (a hub config has only [hub])")
    table: dict[str, Any] = raw.get("hub", {}) if isinstance(raw.get("hub"), dict) else {}
    if "hub" not in raw:
        problems.append("[hub] is missing")
    extra = sorted(set(table) - {"listen", "tls", "data_dir", "database_url", "max_clip_mb", "workers"})
    if extra:
        problems.append(f"[hub] unknown key(s): {', '.join(extra)}")

    listen = table.get("listen", DEFAULT_LISTEN)
    host, port = "", 0
    try:
        host, port = split_listen(listen if isinstance(listen, str) else "")
    except ValueError as exc:
        problems.append(f"[hub] listen {listen!r}: {exc}")
    tls = table.get("tls", True)
    if not isinstance(tls, bool):
        problems.append(f"[hub] tls must be true or false, got {tls!r}")
    data_dir = table.get("data_dir")
    if not isinstance(data_dir, str) or not data_dir.strip():
        problems.append("[hub] data_dir is required (a directory path)")
    database_url = table.get("database_url")
    if database_url is not None and (not isinstance(database_url, str)
                                     or not database_url.startswith(("postgresql://", "sqlite:///"))):
        problems.append("[hub] database_url must start with postgresql:// (or sqlite:///)")
    max_clip_mb = table.get("max_clip_mb", DEFAULT_MAX_CLIP_MB)
    if not isinstance(max_clip_mb, int) or isinstance(max_clip_mb, bool) or not 1 <= max_clip_mb <= 1_000_000:
        problems.append(f"[hub] max_clip_mb must be a whole number 1-1000000, got {max_clip_mb!r}")
    workers = table.get("workers", 1)
    if not isinstance(workers, int) or isinstance(workers, bool) or not 1 <= workers <= MAX_WORKERS:
        problems.append(f"[hub] workers must be a whole number 1-{MAX_WORKERS}, got {workers!r}")
    elif workers > 1 and not (isinstance(database_url, str) and database_url.startswith("postgresql://")):
        problems.append(f"[hub] workers = {workers} needs database_url = \"postgresql://...\": several workers "
                        "share one database, and SQLite is a file of one process")
    if problems:
        raise HubConfigError(f"{path}:\n" + "\n".join(f"  {problem}" for problem in problems))
    return HubConfig(host, port, bool(tls), Path(str(data_dir)), database_url, int(max_clip_mb) * 1024 * 1024,
                     int(workers))
