"""The hub's people: where their accounts and the audit trail of what they do at the hub live, and the identity
that signs that trail. The same code as the box's (web.accounts, evidence.audit) on a StorageLayout rooted at
the hub's data_dir: `<data_dir>/users.sqlite3` and `<data_dir>/audit.sqlite3`.

Invariants:
- One accounts model for box and hub: roles viewer/operator/admin, Argon2id passwords, API tokens, sessions,
  lock-out (web.accounts). At the hub a role means: viewer (Permission.VIEW) the fleet, the clips and their
  playback; operator (+ EXPORT, READ_METRICS) also pull requests, evidence downloads and the Prometheus
  metrics (hub.hub_metrics); admin (+ MANAGE_USERS, READ_AUDIT) also users, tokens and the audit trail. Hub
  users carry no camera grant: every one sees every camera of every box (a grant names a camera id, which
  means nothing across sites; the hub's users are the city's).
- The trail is signed by the hub's receipt key (the key boxes learn at enrolment; `keys/hub.pub` checks it),
  as DeviceIdentity HUB_ID, so `edgenvr hub audit verify` needs nothing but that public key.
- A record's `camera` at the hub is `<box>/<camera>`: a camera id alone is ambiguous across boxes.
Failure paths: the data dir cannot be made, the key unreadable -> OSError / IdentityError from `hub_identity`
(callers refuse the action: no audit record, no action); the trail itself -> AuditError (evidence.audit).
"""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edgenvr.evidence.audit import AuditTrail
from edgenvr.evidence.identity import DeviceIdentity, signing_key
from edgenvr.hub.hub_config import HubConfig
from edgenvr.storage.layout import StorageLayout
from edgenvr.storage.permissions import make_data_dirs

HUB_ID = "hub"                     # the id in the trail's signed statements (a box's is its [box] id)
HUB_NAME = "edgenvr city hub"


def hub_layout(config: HubConfig) -> StorageLayout:
    """The layout whose users_path and audit_path are the hub's; the data dir is made if missing (as the hub's
    database does), since both files refuse a missing directory."""
    make_data_dirs(config.data_dir)
    return StorageLayout(config.data_dir)


def hub_identity(receipt_key: Ed25519PrivateKey) -> DeviceIdentity:
    """The identity that signs the hub's audit trail: the hub's receipt key, as HUB_ID."""
    return DeviceIdentity(HUB_ID, HUB_NAME, receipt_key)


def open_hub_audit(config: HubConfig) -> AuditTrail:
    """The trail for appending (the receipt key made the first time, as serving makes it)."""
    key = signing_key(config.receipt_key_path, config.receipt_public_key_path)
    return AuditTrail(hub_layout(config), hub_identity(key))


def audit_camera(box: str, camera: str) -> str:
    """What a hub record names as its camera."""
    return f"{box}/{camera}"
