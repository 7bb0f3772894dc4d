"""Asking one ONVIF device (its device service URL) for what `edgenvr discover` prints: who made it, its media
profiles and each profile's RTSP URI (ONVIF Device and Media services, SOAP 1.2 over HTTP).

The exchange, in order:
1. GetSystemDateAndTime, unauthenticated (ONVIF allows it before authentication): proves the URL is an ONVIF
   device and gives its clock, whose offset from ours goes into every UsernameToken (devices refuse tokens
   made far from their own time; a camera without NTP is often hours or years off).
2. GetServices (GetCapabilities on devices older than ONVIF 2.0) for the Media service's address.
3. GetDeviceInformation: manufacturer, model, firmware; a refusal leaves them unknown, nothing more.
4. Media GetProfiles, then GetStreamUri (RTP-Unicast over RTSP) for each profile that has video.

Authentication: a WS-Security UsernameToken (password digest) in every call after the first, and HTTP
Digest when a device challenges for it (aiohttp's DigestAuthMiddleware). The password never goes into a
URL, a log line or an error message.

Failures are `OnvifError` with a kind (`OnvifProblem`) and a sentence for a person: unreachable (refused,
no route, no answer within the timeout), not ONVIF (an answer that is not SOAP: a web page, a 404), wrong
user or password (HTTP 401 or the ter:NotAuthorized fault), bad XML (too large, a DTD or entities, not
well-formed; see onvif_soap), refused (another SOAP fault), no media service. Each request has a total
timeout (`REQUEST_TIMEOUT_S`), so no device, however slow or hostile, makes this hang.
"""

from __future__ import annotations

import asyncio
import logging
import os
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from enum import StrEnum
from urllib.parse import urlsplit, urlunsplit

import aiohttp

from edgenvr.camera_discovery.onvif_soap import (
    MAX_MESSAGE_BYTES,
    TDS,
    TRT,
    TT,
    SoapFault,
    XmlProblem,
    body_of,
    child_text,
    envelope,
    fault_of,
    parse_untrusted,
    text,
    username_token,
)
from edgenvr.core.clock import SYSTEM_CLOCK, Clock
from edgenvr.core.url_redaction import redact_text, redact_url

log = logging.getLogger(__name__)

REQUEST_TIMEOUT_S = 10.0
CONNECT_TIMEOUT_S = 5.0
DEVICE_SERVICE_PATH = "/onvif/device_service"   # the path ONVIF's core specification gives the device service
MAX_PROFILES = 64   # GetStreamUri is asked once per profile; a device listing more is cut here (logged)


class OnvifProblem(StrEnum):
    UNREACHABLE = "unreachable"
    NOT_ONVIF = "not an ONVIF device"
    WRONG_PASSWORD = "wrong user name or password"
    BAD_XML = "unusable XML"
    REFUSED = "request refused"
    NO_MEDIA = "no media service"


class OnvifError(Exception):
    """A device that could not be read, with the kind of failure and a sentence for a person."""

    def __init__(self, kind: OnvifProblem, message: str, fault: SoapFault | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.fault = fault


@dataclass(frozen=True)
class DeviceInformation:
    manufacturer: str
    model: str
    firmware: str
    serial: str


@dataclass(frozen=True)
class MediaProfile:
    """One media profile; the numbers are None where the device did not say (or said nonsense)."""

    token: str
    name: str
    encoding: str | None
    width: int | None
    height: int | None
    fps: float | None
    bitrate_kbps: int | None
    stream_uri: str | None = None
    problem: str | None = None   # why there is no stream_uri

    @property
    def pixels(self) -> int:
        return (self.width or 0) * (self.height or 0)

    @property
    def resolution(self) -> str:
        return f"{self.width}x{self.height}" if self.width and self.height else "?"


@dataclass(frozen=True)
class CameraDescription:
    """What one device said about itself. ``clock_offset_ms`` is its clock minus ours (None: not read)."""

    device_url: str
    media_url: str
    profiles: tuple[MediaProfile, ...]
    information: DeviceInformation | None
    information_problem: str | None
    clock_offset_ms: int | None


def device_service_url(given: str) -> str:
    """The device service URL for what a person typed: a URL, or a host with an optional port (then
    http://HOST[:PORT]/onvif/device_service). ValueError with the reason for anything else."""
    candidate = given.strip()
    if "://" not in candidate:
        candidate = f"http://{candidate}"
    try:
        parts = urlsplit(candidate)
        _ = parts.port   # checked only when read
    except ValueError:
        raise ValueError(f"{redact_url(given)!r} is not a URL or host name") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{redact_url(given)!r} is not an http:// or https:// URL of a device service")
    if parts.username is not None or parts.password is not None:
        raise ValueError("give the user with --user and the password as --help says, not inside the URL")
    return urlunsplit((parts.scheme, parts.netloc, parts.path if parts.path not in ("", "/") else DEVICE_SERVICE_PATH,
                       parts.query, ""))


class _Device:
    def __init__(self, session: aiohttp.ClientSession, device_url: str, user: str, password: str,
                 clock: Clock) -> None:
        self.session = session
        self.device_url = device_url
        self.user = user
        self.password = password
        self.clock = clock
        self.clock_offset_ms: int | None = None

    async def call(self, url: str, action: str, body: str, *, authenticated: bool = True) -> ElementTree.Element:
        """The Body content of the answer to ``body`` at ``url``; OnvifError for everything else."""
        header = ""
        if authenticated:
            header = username_token(self.user, self.password, self.clock.now_ms() + (self.clock_offset_ms or 0),
                                    os.urandom(16))
        where = urlsplit(url).netloc
        name = action.rpartition("/")[2]
        try:
            async with self.session.post(url, data=envelope(body, header), allow_redirects=False, headers={
                    "Content-Type": f'application/soap+xml; charset=utf-8; action="{action}"'}) as response:
                status, content_type = response.status, response.content_type
                data = await _read_at_most(response, MAX_MESSAGE_BYTES)
        except asyncio.TimeoutError:
            raise OnvifError(OnvifProblem.UNREACHABLE,
                             f"{where} did not answer {name} within {REQUEST_TIMEOUT_S:.0f} s") from None
        except aiohttp.ClientConnectorError as exc:
            error = exc.os_error
            # asyncio's strerror is "Connect call failed (...)": the errno's own words say what happened.
            reason = (os.strerror(error.errno) if error.errno else str(error)) if error else str(exc)
            raise OnvifError(OnvifProblem.UNREACHABLE, f"cannot connect to {where}: {reason}") from None
        except aiohttp.ClientError as exc:
            raise OnvifError(OnvifProblem.UNREACHABLE,
                             f"{where} broke off {name}: {redact_text(str(exc)) or type(exc).__name__}") from None
        except XmlProblem as exc:
            raise OnvifError(OnvifProblem.BAD_XML, f"{where} answered {name} with unusable XML: {exc}") from None
        if status == 401:
            raise OnvifError(OnvifProblem.WRONG_PASSWORD, self._refused_login("HTTP 401"))
        answer = f"HTTP {status}, {content_type or 'no content type'}"
        try:
            root = parse_untrusted(data)
        except XmlProblem as exc:
            if status not in (200, 400, 500) or "xml" not in content_type:   # a web page, an error page
                raise OnvifError(OnvifProblem.NOT_ONVIF, _not_onvif(where, url, answer)) from None
            raise OnvifError(OnvifProblem.BAD_XML, f"{where} answered {name} with unusable XML: {exc}") from None
        content = body_of(root)
        if content is None:   # XHTML, another XML API, SOAP 1.1 (ONVIF is SOAP 1.2)
            raise OnvifError(OnvifProblem.NOT_ONVIF, _not_onvif(where, url, f"{answer}, not a SOAP 1.2 envelope"))
        fault = fault_of(content)
        if fault is not None:
            if fault.not_authorized:
                raise OnvifError(OnvifProblem.WRONG_PASSWORD, self._refused_login(f"fault {fault.describe()}"), fault)
            raise OnvifError(OnvifProblem.REFUSED, f"{where} refused {name}: {fault.describe()}", fault)
        if status != 200:
            raise OnvifError(OnvifProblem.NOT_ONVIF, _not_onvif(where, url, f"HTTP {status} without a SOAP fault"))
        return content

    def _refused_login(self, how: str) -> str:
        clock = ("" if self.clock_offset_ms is not None else
                 "; its clock could not be read first, and a device whose clock is far off refuses every password")
        return (f"{urlsplit(self.device_url).netloc} refused user {self.user!r}: wrong user name or password "
                f"({how}{clock})")

    async def read_clock(self) -> None:
        """Set clock_offset_ms from GetSystemDateAndTime; left None (tokens made on our clock) where the device
        keeps it behind authentication or gives no UTC time. Raises OnvifError if this is no ONVIF device."""
        try:
            answer = await self.call(self.device_url, f"{TDS}/GetSystemDateAndTime", "<tds:GetSystemDateAndTime/>",
                                     authenticated=False)
        except OnvifError as exc:
            if exc.kind in (OnvifProblem.WRONG_PASSWORD, OnvifProblem.REFUSED):
                log.info("%s: clock not read (%s); tokens use this box's clock", self.device_url, exc)
                return
            raise
        utc = answer.find(f"{{{TDS}}}SystemDateAndTime/{{{TT}}}UTCDateTime")
        try:
            parts = [int(child_text(utc, f"{{{TT}}}{group}", f"{{{TT}}}{field}") or "")
                     for group, field in (("Date", "Year"), ("Date", "Month"), ("Date", "Day"),
                                          ("Time", "Hour"), ("Time", "Minute"), ("Time", "Second"))]
            device_ms = int(datetime(*parts, tzinfo=timezone.utc).timestamp() * 1000)
        except (ValueError, TypeError, OverflowError):
            log.info("%s: no usable UTC time in GetSystemDateAndTime; tokens use this box's clock", self.device_url)
            return
        self.clock_offset_ms = device_ms - self.clock.now_ms()
        if abs(self.clock_offset_ms) > 60_000:
            log.info("%s: its clock is %.0f s off this box's; tokens are made on its time",
                     self.device_url, self.clock_offset_ms / 1000)

    async def media_url(self) -> str:
        """The Media service's address, moved to the host we reached the device on (devices behind NAT or with
        several addresses often name one this box cannot reach)."""
        found: str | None = None
        try:
            answer = await self.call(self.device_url, f"{TDS}/GetServices",
                                     "<tds:GetServices><tds:IncludeCapability>false</tds:IncludeCapability>"
                                     "</tds:GetServices>")
            for service in answer.findall(f"{{{TDS}}}Service"):
                if child_text(service, f"{{{TDS}}}Namespace") == TRT:
                    found = child_text(service, f"{{{TDS}}}XAddr")
        except OnvifError as exc:
            if exc.kind is not OnvifProblem.REFUSED:
                raise
            log.info("%s: GetServices refused (%s); asking GetCapabilities", self.device_url, exc)
        if not found:
            answer = await self.call(self.device_url, f"{TDS}/GetCapabilities",
                                     "<tds:GetCapabilities><tds:Category>Media</tds:Category></tds:GetCapabilities>")
            found = child_text(answer, f"{{{TDS}}}Capabilities", f"{{{TT}}}Media", f"{{{TT}}}XAddr")
        parts = urlsplit(found or "")
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise OnvifError(OnvifProblem.NO_MEDIA, f"{urlsplit(self.device_url).netloc} names no Media service "
                             "(ONVIF Profile S): it offers no video streams")
        reached = urlsplit(self.device_url)
        if parts.hostname != reached.hostname:
            netloc = reached.hostname if parts.port is None else f"{reached.hostname}:{parts.port}"
            if ":" in (reached.hostname or ""):
                netloc = f"[{reached.hostname}]" + (f":{parts.port}" if parts.port else "")
            log.info("%s: Media service named at %s; asked at %s instead", self.device_url, parts.netloc, netloc)
            parts = parts._replace(netloc=netloc)
        return urlunsplit(parts)

    async def information(self) -> DeviceInformation:
        answer = await self.call(self.device_url, f"{TDS}/GetDeviceInformation", "<tds:GetDeviceInformation/>")
        return DeviceInformation(*(child_text(answer, f"{{{TDS}}}{tag}") or ""
                                   for tag in ("Manufacturer", "Model", "FirmwareVersion", "SerialNumber")))

    async def profiles(self, media_url: str) -> list[MediaProfile]:
        answer = await self.call(media_url, f"{TRT}/GetProfiles", "<trt:GetProfiles/>")
        elements = answer.findall(f"{{{TRT}}}Profiles")
        if len(elements) > MAX_PROFILES:
            log.warning("%s lists %d media profiles; the first %d are used", media_url, len(elements), MAX_PROFILES)
        found = []
        for element in elements[:MAX_PROFILES]:
            video = element.find(f"{{{TT}}}VideoEncoderConfiguration")
            token = element.get("token", "").strip()
            if video is None or not token:
                continue   # audio or metadata only: nothing to record
            found.append(MediaProfile(
                token=token, name=child_text(element, f"{{{TT}}}Name") or token,
                encoding=child_text(video, f"{{{TT}}}Encoding") or None,
                width=_number(child_text(video, f"{{{TT}}}Resolution", f"{{{TT}}}Width"), int),
                height=_number(child_text(video, f"{{{TT}}}Resolution", f"{{{TT}}}Height"), int),
                fps=_number(child_text(video, f"{{{TT}}}RateControl", f"{{{TT}}}FrameRateLimit"), float),
                bitrate_kbps=_number(child_text(video, f"{{{TT}}}RateControl", f"{{{TT}}}BitrateLimit"), int)))
        return found

    async def stream_uri(self, media_url: str, profile: MediaProfile) -> MediaProfile:
        body = ("<trt:GetStreamUri><trt:StreamSetup><tt:Stream>RTP-Unicast</tt:Stream><tt:Transport>"
                "<tt:Protocol>RTSP</tt:Protocol></tt:Transport></trt:StreamSetup>"
                f"<trt:ProfileToken>{text(profile.token)}</trt:ProfileToken></trt:GetStreamUri>")
        try:
            answer = await self.call(media_url, f"{TRT}/GetStreamUri", body)
        except OnvifError as exc:
            if exc.kind is not OnvifProblem.REFUSED:
                raise
            return replace(profile, problem=str(exc))
        uri = child_text(answer, f"{{{TRT}}}MediaUri", f"{{{TT}}}Uri") or ""
        if urlsplit(uri).scheme.lower() not in ("rtsp", "rtsps"):
            return replace(profile, problem=f"the device gave no RTSP URI ({redact_url(uri)[:80]!r})")
        return replace(profile, stream_uri=uri)


def _number(value: str | None, kind: type[int] | type[float]) -> int | float | None:
    try:
        number = kind(value or "")
    except ValueError:
        return None
    return number if 0 < number < 1_000_000 else None


def _not_onvif(where: str, url: str, answer: str) -> str:
    return (f"{where} is not an ONVIF device service at {urlsplit(url).path or '/'} ({answer}); "
            f"ONVIF cameras answer at {DEVICE_SERVICE_PATH} unless their manual says otherwise")


async def _read_at_most(response: aiohttp.ClientResponse, limit: int) -> bytes:
    """The body, or XmlProblem as soon as it passes ``limit`` bytes (never held whole in memory)."""
    if response.content_length is not None and response.content_length > limit:
        raise XmlProblem(f"the message is larger than {limit // 1024} KB")
    chunks, size = [], 0
    async for chunk in response.content.iter_chunked(64 * 1024):
        size += len(chunk)
        if size > limit:
            raise XmlProblem(f"the message is larger than {limit // 1024} KB")
        chunks.append(chunk)
    return b"".join(chunks)


async def describe_camera(device_url: str, user: str, password: str, clock: Clock | None = None) -> CameraDescription:
    """Everything `discover` shows about the device at ``device_url``; OnvifError if it cannot be read."""
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S, connect=CONNECT_TIMEOUT_S)
    async with aiohttp.ClientSession(timeout=timeout, middlewares=(aiohttp.DigestAuthMiddleware(user, password),),
                                     trust_env=False) as session:   # no proxy: cameras are on the LAN
        device = _Device(session, device_url, user, password, clock or SYSTEM_CLOCK)
        await device.read_clock()
        media_url = await device.media_url()
        information: DeviceInformation | None = None
        information_problem: str | None = None
        try:
            information = await device.information()
        except OnvifError as exc:   # some devices keep it from users below administrator: not needed for streams
            if exc.kind not in (OnvifProblem.REFUSED, OnvifProblem.WRONG_PASSWORD):
                raise
            information_problem = str(exc)
        profiles = [await device.stream_uri(media_url, profile) for profile in await device.profiles(media_url)]
        return CameraDescription(device_url, media_url, tuple(profiles), information, information_problem,
                                 device.clock_offset_ms)


__all__ = ["CameraDescription", "DeviceInformation", "MediaProfile", "OnvifError", "OnvifProblem",
           "describe_camera", "device_service_url"]
