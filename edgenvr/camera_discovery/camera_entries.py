"""A discovered camera as a [[cameras]] table of the config: which profile is recorded, which one feeds
detection, the camera's id and name, and the TOML text to paste.

Rules:
- The recorded stream (`url`) is the profile with the most pixels (then frame rate, then bitrate; the
  device's first on a tie); the detection sub-stream (`detect_url`) the one with the fewest pixels, if it has
  fewer than the recorded one (otherwise there is none, and detection uses the recorded stream's key frames).
  Profiles without an RTSP URI are never chosen.
- Keys are written under the names the config declares (`config.records.CameraConfig`, through
  `config.keys`), values by the same writer as `edgenvr demo`'s configs (`config.writing.toml_value`).
- Credentials go into the URLs' userinfo, as the config expects them (redacted by `core.url_redaction`
  wherever a URL is shown): the user percent-encoded, and the password only if the caller passes it (the
  `--show-password` flag); otherwise `PASSWORD_PLACEHOLDER`, which a person replaces.
- Text from the device (names, models) is made printable before it is written (`shown`): a line break in a
  profile's name must not end a TOML comment and start TOML of the device's choosing.
- Ids follow the camera-id rule (`core.camera_ids`), made from the camera's address and unique in one run.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import quote, urlsplit, urlunsplit

from edgenvr.camera_discovery.onvif_device import CameraDescription, MediaProfile
from edgenvr.config.keys import keys_of
from edgenvr.config.records import CameraConfig
from edgenvr.config.writing import toml_value
from edgenvr.core.camera_ids import is_camera_id

#: Stands for the password in the URLs printed; a person replaces it (percent-encoding "@", ":", "/", "%").
PASSWORD_PLACEHOLDER = "<password>"


@dataclass(frozen=True)
class CameraEntry:
    """The [[cameras]] table for one camera. ``url``/``detect_url`` carry the credentials as given."""

    id: str
    name: str
    url: str
    detect_url: str | None
    main: MediaProfile
    detect: MediaProfile | None

    def toml(self) -> str:
        """The table, ready to paste under a config's other tables; a comment line says what was chosen."""
        keys = {key.attribute: key for key in keys_of(CameraConfig, "cameras")}
        values = {"id": self.id, "name": self.name, "url": self.url, "detect_url": self.detect_url}
        chosen = f"# recorded: {_describe(self.main)}" + (
            f"; detection: {_describe(self.detect)}" if self.detect else "; no smaller stream: detection uses "
            "the recorded stream's key frames")
        lines = [chosen]
        if PASSWORD_PLACEHOLDER in self.url:
            lines.append(f"# replace {PASSWORD_PLACEHOLDER} with the camera's password, percent-encoded "
                         '("@" as %40, ":" as %3A, "/" as %2F, "%" as %25)')
        lines.append("[[cameras]]")
        lines += [f"{keys[name].name} = {toml_value(keys[name].kind, value)}"
                  for name, value in values.items() if value is not None]
        return "\n".join(lines) + "\n"


def choose_streams(profiles: tuple[MediaProfile, ...]) -> tuple[MediaProfile, MediaProfile | None] | None:
    """(recorded, detection or None) by the module's rules; None if no profile has an RTSP URI."""
    usable = [profile for profile in profiles if profile.stream_uri]
    if not usable:
        return None
    main = max(usable, key=lambda profile: (profile.pixels, profile.fps or 0, profile.bitrate_kbps or 0))
    smaller = [profile for profile in usable if 0 < profile.pixels < main.pixels]
    detect = min(smaller, key=lambda profile: profile.pixels) if smaller else None
    return main, detect


def with_credentials(uri: str, user: str, password: str | None) -> str:
    """``uri`` with ``user`` and the password (or the placeholder) as its userinfo, replacing any it had."""
    parts = urlsplit(uri)
    host = parts.netloc.rpartition("@")[2]
    secret = PASSWORD_PLACEHOLDER if password is None else quote(password, safe="")
    return urlunsplit(parts._replace(netloc=f"{quote(user, safe='')}:{secret}@{host}"))


def camera_id_for(device_url: str, taken: set[str]) -> str:
    """An id from the camera's address ("cam-192-168-1-64"), not in ``taken`` (which it is added to)."""
    host = urlsplit(device_url).hostname or "camera"
    base = ("cam-" + re.sub(r"[^a-z0-9]+", "-", host.lower()).strip("-"))[:28].strip("-")
    candidate, number = base, 2
    while candidate in taken or not is_camera_id(candidate):
        candidate, number = f"{base}-{number}", number + 1
    taken.add(candidate)
    return candidate


def camera_entry(description: CameraDescription, user: str, password: str | None, taken_ids: set[str],
                 scope_name: str | None = None) -> CameraEntry | None:
    """The [[cameras]] table for ``description``, or None if it has no RTSP stream. ``password`` None writes
    the placeholder. The name is manufacturer and model (else the device's ONVIF name scope) and address."""
    chosen = choose_streams(description.profiles)
    if chosen is None:
        return None
    main, detect = chosen
    host = urlsplit(description.device_url).hostname or ""
    information = description.information
    label = " ".join(part for part in (information.manufacturer, information.model) if part) if information else ""
    name = shown(f"{label or scope_name or 'ONVIF camera'} ({host})")
    assert main.stream_uri is not None
    return CameraEntry(
        id=camera_id_for(description.device_url, taken_ids), name=name,
        url=with_credentials(main.stream_uri, user, password),
        detect_url=with_credentials(detect.stream_uri, user, password) if detect and detect.stream_uri else None,
        main=main, detect=detect)


def shown(value: str, limit: int = 80) -> str:
    """Text a device sent, safe to print and to put in a TOML comment: anything unprintable (line breaks that
    would end the comment and start TOML of the device's choosing, terminal escapes) becomes "?", and at most
    ``limit`` characters are kept."""
    cleaned = "".join(character if character.isprintable() else "?" for character in value)
    return cleaned if len(cleaned) <= limit else cleaned[:limit - 3] + "..."


def _describe(profile: MediaProfile) -> str:
    return shown(f"{profile.name} {profile.resolution} {profile.encoding or '?'}")
