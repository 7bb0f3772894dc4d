"""Where the box publishes on the MQTT broker, and the words it publishes: the one place the topic layout is
written, for the publisher and the Home Assistant discovery configs that point at it.

    <prefix>/availability              online | offline   retained; the connection's last will says offline
    <prefix>/cameras/<camera>/state    JSON {camera, name, state, since_ms, reason, online, motion, tamper}, retained
    <prefix>/cameras/<camera>/online   ON | OFF   retained (ON while the recorder is recording)
    <prefix>/cameras/<camera>/motion   ON | OFF   retained (ON while a motion event is open)
    <prefix>/cameras/<camera>/tamper   ON | OFF   retained (ON while a tamper event is open)
    <prefix>/cameras/<camera>/snapshot JPEG bytes retained (the newest event's snapshot)
    <prefix>/cameras/<camera>/events   JSON per event start and end, not retained

Invariants: camera ids are [a-z0-9-] (core.camera_ids) and the prefix is checked by the config (no wildcard,
no empty level), so every topic here is a valid MQTT topic name without escaping.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from edgenvr.config.records import Config


class Availability(StrEnum):
    """The box's availability payloads: Home Assistant's defaults (payload_available / payload_not_available)."""
    ONLINE = "online"
    OFFLINE = "offline"


class Switch(StrEnum):
    """A binary sensor's payloads: Home Assistant's defaults (payload_on / payload_off)."""
    ON = "ON"
    OFF = "OFF"


class CameraTopic(StrEnum):
    """The last level of a camera's topics."""
    STATE = "state"
    ONLINE = "online"
    MOTION = "motion"
    TAMPER = "tamper"
    SNAPSHOT = "snapshot"
    EVENTS = "events"


@dataclass(frozen=True)
class BoxTopics:
    prefix: str

    @classmethod
    def of(cls, config: Config) -> BoxTopics:
        return cls(config.mqtt.prefix_for(config.box.box_id))

    @property
    def availability(self) -> str:
        return f"{self.prefix}/availability"

    def camera(self, camera_id: str, topic: CameraTopic) -> str:
        return f"{self.prefix}/cameras/{camera_id}/{topic}"
