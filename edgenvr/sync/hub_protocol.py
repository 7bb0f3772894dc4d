"""What the box and the city hub say to each other, named once for both ends (the hub imports it; the box's
sync process speaks it): the API paths, the channel's message types and a remote pull's states.

Channel (a WebSocket the box opens at CHANNEL_PATH, signed like every box request; JSON text messages):
- hub -> box  {"type": "pull", "id", "camera", "start_ms", "end_ms", "reason"}: send this range.
- box -> hub  {"type": "pull_state", "id", "state", "progress", "detail"}: how that request stands.
- box -> hub  {"type": "report", ...}: health (sync.box_report), every REPORT_EVERY_S and on change.
- box -> hub  {"type": "audit", "records": [...], "head": {...}}: the next records of its audit trail after the
  hub's copy's end, each with its signature, and its signed head (evidence.audit.upstream_batch).
- hub -> box  {"type": "audit_ack", "seq"}: where the hub's copy of the box's trail ends (on connect and after
  every batch): the box sends from there.
- box -> hub  {"type": "lost", "clips": [{"id", "kind", "camera", "start_ms", "end_ms", "reason", "at_ms"}]}:
  queued clips whose video the box lost before sending them; hub -> box {"type": "lost_ack", "ids"}: on record.
"""

from __future__ import annotations

import re
from enum import StrEnum

ENROL_PATH = "/api/v1/enrol"
UPLOADS_PATH = "/api/v1/uploads/"
CHANNEL_PATH = "/api/v1/channel"
PING_S = 30.0                    # WebSocket pings both ways: NAT mappings stay, a dead peer is found
MAX_MESSAGE_BYTES = 256 * 1024
AUDIT_BATCH = 50                 # records per audit message (a record is at most a few KB)
REPORT_EVERY_S = 60.0
# A box that has not reported for this long is silent in the hub's fleet view: five reports missed.
SILENT_AFTER_MS = int(5 * REPORT_EVERY_S * 1000)
PULL_ID = re.compile(r"[0-9a-f]{32}")   # a pull request's id: 128 random bits, hex
MAX_PULL_REASON = 500            # characters of a pull's reason (and of the box's word on how it stands)


class MessageType(StrEnum):
    PULL = "pull"
    PULL_STATE = "pull_state"
    REPORT = "report"
    AUDIT = "audit"
    AUDIT_ACK = "audit_ack"
    LOST = "lost"
    LOST_ACK = "lost_ack"


class PullState(StrEnum):
    """queued (waiting for the box, or accepted and waiting its turn) -> exporting -> uploading -> ready (the
    clip is at the hub); unavailable (the range is not on the box) and ready are final; failed (the hub
    refused the clip) is not: the box tries again later."""
    QUEUED = "queued"
    EXPORTING = "exporting"
    UPLOADING = "uploading"
    READY = "ready"
    UNAVAILABLE = "unavailable"
    FAILED = "failed"
