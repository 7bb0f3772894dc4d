"""The supervisor's audit duties: at start-up, the box's identity (its key pair is made at the first start)
and a `config_change` audit record whenever the config file differs from the one the previous start saw;
at start-up and then once a day (`prune_audit`), the pruning of audit records older than
`storage.audit_days` (a signed checkpoint keeps the rest verifiable), only on a synchronised clock: a clock
running years ahead must not prune the trail away.

Why: what a box records and keeps (cameras, days, quotas) is part of its evidence; a reviewer must be able to
see when the rules changed, by the SHA-256 of the file in force.

Failure paths: a key or an audit trail that cannot be used or written (disk full, a damaged file) is logged
as an ERROR and recording starts anyway: losing video to protect the record of a setting would be the worse
trade. The next start records the change then.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sqlite3
from pathlib import Path

from edgenvr.config.records import Config
from edgenvr.core.clock import Clock
from edgenvr.core.units import DAY_MS
from edgenvr.evidence.audit import AuditAction, AuditError, AuditTrail
from edgenvr.evidence.identity import IdentityError, device_identity
from edgenvr.storage.layout import StorageLayout

log = logging.getLogger(__name__)

ACTOR = "edgenvr run"


def audit_config_at_start(config: Config, layout: StorageLayout, clock: Clock) -> None:
    """See the module docstring."""
    try:
        identity = device_identity(layout, config.box.box_id, config.box.box_name)
        log.info("box %s (%s), key fingerprint %s", identity.box_id, identity.box_name, identity.fingerprint)
        if not Path(config.source).is_file():   # built in code (tests, the demo): no file to record
            return
        digest = hashlib.sha256(Path(config.source).read_bytes()).hexdigest()
        trail = AuditTrail(layout, identity, clock)
        try:
            _prune(trail, config, clock)
            changes = [r for r in trail.records() if r.action == AuditAction.CONFIG_CHANGE]
            if not changes or json.loads(changes[-1].detail).get("sha256") != digest:
                trail.append(ACTOR, AuditAction.CONFIG_CHANGE, reason="config file in force at start-up",
                             detail=json.dumps({"file": str(config.source), "sha256": digest}, sort_keys=True))
                log.info("config %s (SHA-256 %s) recorded in the audit trail", config.source, digest)
        finally:
            trail.close()
    except (AuditError, IdentityError, OSError, sqlite3.Error, ValueError) as exc:
        log.error("the config in force could not be recorded in the audit trail (%s); recording starts anyway", exc)


def prune_audit(config: Config, layout: StorageLayout, clock: Clock) -> None:
    """The daily pruning (see the module docstring); trouble is logged, recording goes on."""
    try:
        with AuditTrail(layout, device_identity(layout, config.box.box_id, config.box.box_name), clock) as trail:
            _prune(trail, config, clock)
    except (AuditError, IdentityError, OSError, sqlite3.Error) as exc:
        log.error("audit trail not pruned (%s); tried again tomorrow", exc)


def _prune(trail: AuditTrail, config: Config, clock: Clock) -> None:
    if not clock.synchronised():
        return
    pruned = trail.prune(clock.now_ms() - int(config.storage.audit_days * DAY_MS))
    if pruned:
        log.info("audit trail: %d records older than %g days pruned (a signed checkpoint stands for them)",
                 pruned, config.storage.audit_days)
