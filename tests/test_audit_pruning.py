"""The supervisor's pruning of the audit trail, as an auditor relies on it: records older than audit_days go
(a signed checkpoint stands for them, the rest still verifies), and a clock that is not synchronised (a box
booted at 1970, or a year ahead) prunes nothing."""

from __future__ import annotations

from pathlib import Path

from edgenvr.config.checking import parse_config
from edgenvr.core.clock import SimulatedClock
from edgenvr.core.units import DAY_MS
from edgenvr.evidence.audit import AuditAction, AuditTrail, read_records, verify_trail
from edgenvr.evidence.identity import device_identity
from edgenvr.runtime.config_audit import prune_audit
from edgenvr.storage.layout import StorageLayout


def test_old_audit_records_are_pruned_only_on_a_synchronised_clock(tmp_path: Path) -> None:
    config = parse_config(f'[box]\nid = "rt08"\n[storage]\ndata_dir = "{tmp_path / "data"}"\naudit_days = 30\n')
    layout = StorageLayout(config.storage.data_dir)
    identity = device_identity(layout, "rt08", "rt08")
    clock = SimulatedClock()
    with AuditTrail(layout, identity, clock) as trail:
        for day in range(60):
            trail.append("ani", AuditAction.HOLD_ADD, camera="gate", reason=f"day {day}")
            clock.advance(DAY_MS / 1000)

    clock.step_wall_ms(365 * DAY_MS)   # a year ahead, not synchronised: nothing may go
    clock.set_synchronised(False)
    prune_audit(config, layout, clock)
    assert len(read_records(layout)) == 60

    clock.step_wall_ms(-365 * DAY_MS)
    clock.set_synchronised(True)
    prune_audit(config, layout, clock)
    kept = read_records(layout)
    assert [r.reason for r in kept] == [f"day {day}" for day in range(30, 60)]
    result = verify_trail(layout, identity.public_key)
    assert result.ok and result.records == 30, result
