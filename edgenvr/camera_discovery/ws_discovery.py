"""WS-Discovery of ONVIF devices: a Probe multicast on each chosen interface, the ProbeMatches collected for
a fixed time, one `DiscoveredDevice` per endpoint reference.

Invariants:
- Each interface gets its own socket, bound to that interface's IPv4 address and sending through it
  (IP_MULTICAST_IF with the interface index): the probe leaves by the interface named in the output, needs
  no route to 224.0.0.0/4 (a camera VLAN without a default gateway works), and answers come back to it.
- Two probes (Types `dn:NetworkVideoTransmitter` and `tds:Device`: a probe's types must all match, and some
  devices announce only one), each sent twice (SOAP-over-UDP repeats multicast, UDP being lossy), TTL 1:
  cameras on the same link only; others are reached with `--device`.
- Only answers that relate to our probes' message ids count. A device answering several probes, or with
  several ProbeMatches, is one device (keyed by its endpoint reference, its XAddrs merged). An answer that
  cannot be read (hostile or broken XML, no endpoint reference) is skipped, logged and counted in the
  result, never fatal: one broken device must not hide the others.
- Nothing is sent to a device here but the multicast probe; no reply makes this wait past its timeout.
"""

from __future__ import annotations

import asyncio
import logging
import random
import socket
import struct
import uuid
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

import psutil

from edgenvr.camera_discovery.onvif_soap import (
    SOAP_ENV,
    WSA,
    WSD,
    XmlProblem,
    body_of,
    envelope,
    local_name,
    parse_untrusted,
    text,
)

log = logging.getLogger(__name__)

MULTICAST_GROUP = "239.255.255.250"
DISCOVERY_PORT = 3702
_PROBE_TYPES = (("dn", "NetworkVideoTransmitter"), ("tds", "Device"))
_REPEAT_DELAY_S = (0.05, 0.25)   # SOAP-over-UDP's UDP_MIN_DELAY..UDP_MAX_DELAY before the repeat


class DiscoveryError(Exception):
    """Discovery could not start: no usable interface, or one named that does not exist or is down."""


@dataclass(frozen=True)
class NetworkInterface:
    """An interface a probe goes out on: its name, kernel index and the IPv4 address its socket binds."""

    name: str
    index: int
    address: str

    def describe(self) -> str:
        return f"{self.name} ({self.address})"


def multicast_interfaces(names: tuple[str, ...] = ()) -> list[NetworkInterface]:
    """The interfaces to probe on: those named, or every interface that is up, not loopback, can multicast and
    has an IPv4 address. DiscoveryError says why an interface named cannot be used, or that none can."""
    addresses = psutil.net_if_addrs()
    stats = psutil.net_if_stats()
    chosen: list[NetworkInterface] = []
    for name in names or tuple(addresses):
        ipv4 = [entry.address for entry in addresses.get(name, ()) if entry.family == socket.AF_INET]
        state = stats.get(name)
        flags = set(state.flags.split(",")) if state is not None and state.flags else set()
        problem = None
        if name not in addresses:
            problem = f"there is no network interface {name!r} (there are: {', '.join(sorted(addresses))})"
        elif state is None or not state.isup:
            problem = f"network interface {name!r} is down"
        elif not ipv4:
            problem = f"network interface {name!r} has no IPv4 address"
        elif "loopback" in flags or "multicast" not in flags:
            problem = f"network interface {name!r} cannot send multicast"
        if problem is None:
            chosen.append(NetworkInterface(name, socket.if_nametoindex(name), ipv4[0]))
        elif names:
            raise DiscoveryError(problem)
    if not chosen:
        raise DiscoveryError("no network interface is up with an IPv4 address and multicast; "
                             "connect the box to the cameras' network, or give a camera with --device")
    return chosen


@dataclass(frozen=True)
class DiscoveredDevice:
    """One ONVIF device that answered: its endpoint reference (stable across reboots and address changes),
    service addresses (XAddrs), scopes and types as it announced them, and where the answer came from."""

    endpoint: str
    xaddrs: tuple[str, ...]
    scopes: tuple[str, ...]
    types: tuple[str, ...]
    source: str
    interface: str

    @property
    def device_url(self) -> str | None:
        """The device service address to ask: plain HTTP before HTTPS (cameras' certificates are self-signed
        and would be refused), the one on the address that answered first."""
        usable = [url for url in self.xaddrs if urlsplit(url).scheme in ("http", "https") and urlsplit(url).hostname]
        usable.sort(key=lambda url: (urlsplit(url).scheme != "http", urlsplit(url).hostname != self.source))
        return usable[0] if usable else None

    def scope(self, kind: str) -> str | None:
        """An ONVIF scope's value: ``scope("name")`` is X of onvif://www.onvif.org/name/X, percent-decoded."""
        prefix = f"onvif://www.onvif.org/{kind}/"
        for scope in self.scopes:
            if scope.lower().startswith(prefix):
                return unquote(scope[len(prefix):]) or None
        return None


@dataclass
class DiscoveryResult:
    """What a probe round found. ``unreadable`` holds one line per answer that was skipped (where from and
    why); ``send_problems`` one per interface the probe could not leave by."""

    devices: list[DiscoveredDevice]
    interfaces: list[NetworkInterface]
    timeout_s: float
    unreadable: list[str] = field(default_factory=list)
    send_problems: list[str] = field(default_factory=list)


def probe_message(message_id: str, prefix: str, type_name: str) -> bytes:
    """A WS-Discovery (2005/04, the version ONVIF uses) Probe for devices of type ``prefix:type_name``."""
    header = (f'<a:Action s:mustUnderstand="1">{WSD}/Probe</a:Action><a:MessageID>{text(message_id)}</a:MessageID>'
              f"<a:ReplyTo><a:Address>{WSA}/role/anonymous</a:Address></a:ReplyTo>"
              '<a:To s:mustUnderstand="1">urn:schemas-xmlsoap-org:ws:2005:04:discovery</a:To>')
    return envelope(f"<d:Probe><d:Types>{prefix}:{type_name}</d:Types></d:Probe>", header)


def read_probe_matches(data: bytes, message_ids: set[str], source: str, interface: str) -> list[DiscoveredDevice]:
    """The devices in a ProbeMatches answer to one of ``message_ids``; [] for an answer to someone else's
    probe. XmlProblem for an answer that cannot be read."""
    root = parse_untrusted(data)
    relates_to = root.findtext(f"{{{SOAP_ENV}}}Header/{{{WSA}}}RelatesTo")
    if relates_to is None or relates_to.strip() not in message_ids:
        return []
    body = body_of(root)
    if body is None or body.tag != f"{{{WSD}}}ProbeMatches":
        raise XmlProblem("it answered our probe with something other than ProbeMatches")
    found = []
    for match in body.findall(f"{{{WSD}}}ProbeMatch"):
        endpoint = (match.findtext(f"{{{WSA}}}EndpointReference/{{{WSA}}}Address") or "").strip()
        if not endpoint:
            raise XmlProblem("its ProbeMatch has no endpoint reference")
        found.append(DiscoveredDevice(
            endpoint=endpoint,
            xaddrs=tuple((match.findtext(f"{{{WSD}}}XAddrs") or "").split()),
            scopes=tuple((match.findtext(f"{{{WSD}}}Scopes") or "").split()),
            types=tuple(local_name(name) for name in (match.findtext(f"{{{WSD}}}Types") or "").split()),
            source=source, interface=interface))
    return found


class _Answers(asyncio.DatagramProtocol):
    def __init__(self, interface: str, message_ids: set[str], result: DiscoveryResult,
                 by_endpoint: dict[str, DiscoveredDevice]) -> None:
        self.interface = interface
        self.message_ids = message_ids
        self.result = result
        self.by_endpoint = by_endpoint

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        source = addr[0]
        try:
            devices = read_probe_matches(data, self.message_ids, source, self.interface)
        except XmlProblem as exc:
            log.info("skipped an answer to the WS-Discovery probe from %s: %s", source, exc)
            self.result.unreadable.append(f"from {source}: {exc}")
            return
        for device in devices:
            known = self.by_endpoint.get(device.endpoint)
            if known is not None:   # the same device again (another probe, a repeat): keep one, all its addresses
                xaddrs = known.xaddrs + tuple(url for url in device.xaddrs if url not in known.xaddrs)
                device = DiscoveredDevice(known.endpoint, xaddrs, known.scopes or device.scopes,
                                          known.types or device.types, known.source, known.interface)
            self.by_endpoint[device.endpoint] = device

    def error_received(self, exc: Exception) -> None:   # e.g. ICMP unreachable for a repeat: nothing to do
        log.debug("WS-Discovery socket on %s: %s", self.interface, exc)


def _probe_socket(interface: NetworkInterface) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_UDP)
    try:
        sock.bind((interface.address, 0))
        # struct ip_mreqn {group (unused here), local address, interface index}: send through this device
        # whatever the routing table says (a fresh namespace or a camera VLAN may have no multicast route).
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF,
                        struct.pack("=4s4si", bytes(4), socket.inet_aton(interface.address), interface.index))
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 1)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


async def discover(interfaces: list[NetworkInterface], timeout_s: float) -> DiscoveryResult:
    """Probe on ``interfaces`` and collect answers for ``timeout_s`` seconds (devices wait up to 0.5 s at
    random before answering, so less than 1 s may miss some)."""
    loop = asyncio.get_running_loop()
    result = DiscoveryResult([], interfaces, timeout_s)
    by_endpoint: dict[str, DiscoveredDevice] = {}
    probes = [(f"urn:uuid:{uuid.uuid4()}", prefix, name) for prefix, name in _PROBE_TYPES]
    message_ids = {message_id for message_id, _, _ in probes}
    deadline = loop.time() + timeout_s
    transports: list[tuple[NetworkInterface, asyncio.DatagramTransport]] = []
    try:
        for interface in interfaces:
            try:
                transport, _ = await loop.create_datagram_endpoint(
                    lambda: _Answers(interface.name, message_ids, result, by_endpoint),   # made at once: no late binding
                    sock=_probe_socket(interface))
            except OSError as exc:
                log.info("cannot probe on %s: %s", interface.describe(), exc)
                result.send_problems.append(f"{interface.describe()}: {exc.strerror or exc}")
                continue
            transports.append((interface, transport))
        for attempt in range(2):
            if attempt:
                await asyncio.sleep(random.uniform(*_REPEAT_DELAY_S))
            for interface, transport in transports:
                for message_id, prefix, name in probes:
                    try:   # sendto on a non-blocking UDP socket: sent, or an error at once
                        transport.sendto(probe_message(message_id, prefix, name), (MULTICAST_GROUP, DISCOVERY_PORT))
                    except OSError as exc:
                        problem = f"{interface.describe()}: {exc.strerror or exc}"
                        if problem not in result.send_problems:
                            log.info("cannot send the WS-Discovery probe on %s", problem)
                            result.send_problems.append(problem)
        await asyncio.sleep(max(0.0, deadline - loop.time()))
    finally:
        for _, transport in transports:
            transport.close()
    result.devices = sorted(by_endpoint.values(), key=lambda device: (device.device_url or "", device.endpoint))
    return result
