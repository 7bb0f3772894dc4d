"""Home Assistant MQTT discovery configs for the box and its cameras, as Home Assistant's MQTT integration
documents them (integrations/mqtt "Discovery messages", binary_sensor.mqtt, image.mqtt): one config per entity,
published retained to `<discovery_prefix>/<component>/<unique_id>/config` (the documented best practice for
entities with a unique_id: the object id is the unique id, no node id).

Each camera is a device of its own, linked to the box's device (`via_device`), with:
    binary_sensor  Motion    device_class motion        <prefix>/cameras/<camera>/motion
    binary_sensor  Tamper    device_class tamper        <prefix>/cameras/<camera>/tamper   (attributes: .../state)
    binary_sensor  Online    device_class connectivity  <prefix>/cameras/<camera>/online   (attributes: .../state)
    image          Snapshot  image/jpeg                 <prefix>/cameras/<camera>/snapshot (the newest event's)
all unavailable while the box is offline (availability: <prefix>/availability). The box's device has one
binary_sensor, Online (connectivity), whose state IS the availability topic, so a box that went away shows as
"off" (disconnected), which automations can act on, rather than "unavailable".

Owns the configs' content. Invariants: every entity has a unique_id (stable: box id, camera id, entity) and a
device with identifiers, which is what the device registry needs; payloads use Home Assistant's default words
(ON/OFF, online/offline: mqtt_topics) and say so explicitly. Removing an entity is an empty retained payload on
its config topic (`removals`), sent for cameras the index knows that the config no longer has.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import edgenvr
from edgenvr.config.records import CameraConfig, Config
from edgenvr.home_automation.mqtt_topics import (
    Availability,
    BoxTopics,
    CameraTopic,
    Switch,
)

MANUFACTURER = "edgenvr"


class Component(StrEnum):
    """Home Assistant's MQTT platforms used here."""
    BINARY_SENSOR = "binary_sensor"
    IMAGE = "image"


@dataclass(frozen=True)
class CameraEntity:
    """One entity of a camera: its platform, name, device class and the camera topic it shows."""
    key: str
    component: Component
    name: str
    topic: CameraTopic
    device_class: str | None = None
    attributes: bool = False   # its attributes are the camera's state JSON


CAMERA_ENTITIES = (
    CameraEntity("motion", Component.BINARY_SENSOR, "Motion", CameraTopic.MOTION, "motion"),
    CameraEntity("tamper", Component.BINARY_SENSOR, "Tamper", CameraTopic.TAMPER, "tamper", attributes=True),
    CameraEntity("online", Component.BINARY_SENSOR, "Online", CameraTopic.ONLINE, "connectivity", attributes=True),
    CameraEntity("snapshot", Component.IMAGE, "Snapshot", CameraTopic.SNAPSHOT),
)


@dataclass(frozen=True)
class DiscoveryConfig:
    topic: str
    payload: dict[str, Any]

    def payload_bytes(self) -> bytes:
        if not self.payload:   # a removal: an empty message (it also clears the config the broker retained)
            return b""
        return json.dumps(self.payload, sort_keys=True, separators=(",", ":")).encode()


def box_device_id(box_id: str) -> str:
    return f"edgenvr_{box_id}"


def camera_device_id(box_id: str, camera_id: str) -> str:
    return f"edgenvr_{box_id}_{camera_id}"


def discovery_configs(config: Config) -> list[DiscoveryConfig]:
    """The configs of the box's entity and of every enabled camera's entities."""
    box_id, topics = config.box.box_id, BoxTopics.of(config)
    origin = {"name": "edgenvr", "sw_version": edgenvr.__version__}   # logged by Home Assistant: who sent it
    box_device = {"identifiers": [box_device_id(box_id)], "name": config.box.box_name, "manufacturer": MANUFACTURER,
                  "model": "edgenvr video recorder", "sw_version": edgenvr.__version__}
    box_online = f"{box_device_id(box_id)}_online"
    configs = [DiscoveryConfig(_config_topic(config, Component.BINARY_SENSOR, box_online), {
        "name": "Online", "unique_id": box_online, "device_class": "connectivity", "entity_category": "diagnostic",
        "state_topic": topics.availability, "payload_on": Availability.ONLINE, "payload_off": Availability.OFFLINE,
        "qos": 1, "device": box_device, "origin": origin})]
    for camera in config.enabled_cameras:
        configs += [_camera_entity(config, topics, camera, entity, origin) for entity in CAMERA_ENTITIES]
    return configs


def removals(config: Config, camera_ids: tuple[str, ...]) -> list[DiscoveryConfig]:
    """Empty configs (Home Assistant deletes the entity) for every entity of these cameras."""
    return [DiscoveryConfig(_config_topic(config, entity.component, _unique_id(config.box.box_id, camera, entity)), {})
            for camera in camera_ids for entity in CAMERA_ENTITIES]


def _camera_entity(config: Config, topics: BoxTopics, camera: CameraConfig, entity: CameraEntity,
                   origin: dict[str, str]) -> DiscoveryConfig:
    box_id = config.box.box_id
    unique_id = _unique_id(box_id, camera.id, entity)
    payload: dict[str, Any] = {
        "name": entity.name, "unique_id": unique_id,
        "availability_topic": topics.availability, "payload_available": Availability.ONLINE,
        "payload_not_available": Availability.OFFLINE,
        "device": {"identifiers": [camera_device_id(box_id, camera.id)], "name": camera.name,
                   "manufacturer": MANUFACTURER, "model": "camera recorded by edgenvr",
                   "sw_version": edgenvr.__version__, "via_device": box_device_id(box_id)},
        "origin": origin}
    if entity.component is Component.IMAGE:   # the JPEG's bytes as they are (no image_encoding)
        payload |= {"image_topic": topics.camera(camera.id, entity.topic), "content_type": "image/jpeg"}
    else:
        payload |= {"state_topic": topics.camera(camera.id, entity.topic), "device_class": entity.device_class,
                    "payload_on": Switch.ON, "payload_off": Switch.OFF, "qos": 1}
        if entity.attributes:
            payload["json_attributes_topic"] = topics.camera(camera.id, CameraTopic.STATE)
    return DiscoveryConfig(_config_topic(config, entity.component, unique_id), payload)


def _unique_id(box_id: str, camera_id: str, entity: CameraEntity) -> str:
    return f"{camera_device_id(box_id, camera_id)}_{entity.key}"


def _config_topic(config: Config, component: Component, unique_id: str) -> str:
    return f"{config.mqtt.discovery_prefix}/{component}/{unique_id}/config"
