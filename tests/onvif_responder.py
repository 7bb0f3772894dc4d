"""A small ONVIF camera for the tests of `edgenvr discover`: it answers WS-Discovery probes on multicast and
serves the Device and Media services (SOAP 1.2 over HTTP) with the authentication real cameras use.

Run it as a script inside a network namespace (`ip netns exec NS python tests/onvif_responder.py ...`); it
prints "ready" on stdout once its HTTP port and its multicast membership are up, then serves until killed.
It is written independently of `edgenvr.camera_discovery` (its own XML, its own digest check), so the two
sides cannot share a mistake.

- Discovery: a UDP socket bound to 239.255.255.250:3702 joins the group on the interface given by index
  (ip_mreqn), which needs no multicast route; each Probe for NetworkVideoTransmitter or Device (or for any
  type) gets a ProbeMatch after a random 0-0.3 s, unicast from the camera's own address to the sender.
- Authentication: every operation but GetSystemDateAndTime, GetServices and GetCapabilities (ONVIF's
  pre-auth set) needs a WS-Security UsernameToken whose digest matches and whose Created is within 5 minutes
  of the camera's clock (which `--clock-offset-s` puts off ours, as a camera without NTP is), else HTTP 400
  with the ter:NotAuthorized fault. `--mode http-digest` wants HTTP Digest instead (401 challenges).
- `--mode` makes it misbehave: `bad-xml` / `xml-bomb` answer GetProfiles with truncated XML / a "billion
  laughs" document, `bad-probe-xml` / `probe-bomb` do the same to probes, `not-onvif` is a web server that
  answers every request with a 404 page (and no probes).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import random
import re
import secrets
import socket
import struct
import sys
import time
import uuid
import xml.etree.ElementTree as ElementTree
from datetime import datetime, timezone
from pathlib import Path

from aiohttp import web

SOAP = "http://www.w3.org/2003/05/soap-envelope"
WSSE = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd"
WSU = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd"
PRE_AUTH = {"GetSystemDateAndTime", "GetServices", "GetCapabilities"}
REALM = "onvif-responder"
NAMESPACES = ('xmlns:s="http://www.w3.org/2003/05/soap-envelope" '
              'xmlns:a="http://schemas.xmlsoap.org/ws/2004/08/addressing" '
              'xmlns:d="http://schemas.xmlsoap.org/ws/2005/04/discovery" '
              'xmlns:dn="http://www.onvif.org/ver10/network/wsdl" '
              'xmlns:tds="http://www.onvif.org/ver10/device/wsdl" '
              'xmlns:trt="http://www.onvif.org/ver10/media/wsdl" '
              'xmlns:tt="http://www.onvif.org/ver10/schema" '
              'xmlns:ter="http://www.onvif.org/ver10/error"')
BILLION_LAUGHS = ('<?xml version="1.0"?>\n<!DOCTYPE lolz [<!ENTITY lol "lol">'
                  + "".join(f'<!ENTITY lol{n} "{("&lol" + (str(n - 1) if n > 1 else "") + ";") * 10}">'
                            for n in range(1, 10))
                  + f']>\n<s:Envelope {NAMESPACES}><s:Body><trt:GetProfilesResponse>&lol9;'
                    "</trt:GetProfilesResponse></s:Body></s:Envelope>")

# (token, name, width, height, fps, kbit/s, path); listed in this order, the largest not first, and an
# audio-only profile that has nothing to record.
PROFILES = (("profile_720", "Third", 1280, 720, 15, 2048, "/Streaming/Channels/103"),
            ("profile_main", "MainStream", 1920, 1080, 25, 4096, "/Streaming/Channels/101"),
            ("profile_sub", "SubStream", 640, 360, 10, 512, "/Streaming/Channels/102"),
            ("profile_audio", "AudioOnly", 0, 0, 0, 0, ""))


def envelope(body: str, header: str = "") -> bytes:
    return (f'<?xml version="1.0" encoding="UTF-8"?>\n<s:Envelope {NAMESPACES}><s:Header>{header}</s:Header>'
            f"<s:Body>{body}</s:Body></s:Envelope>").encode()


class Camera:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.password = Path(args.password_file).read_text().splitlines()[0]
        self.http = f"http://{args.address}:{args.port}"

    def now(self) -> float:
        return time.time() + self.args.clock_offset_s

    # -- discovery -----------------------------------------------------------------------------------

    def probe_match(self, relates_to: str) -> bytes:
        if self.args.mode == "bad-probe-xml":
            return b'<?xml version="1.0"?><s:Envelope xmlns:s="x"><s:Body><d:ProbeMatches>'
        if self.args.mode == "probe-bomb":
            return BILLION_LAUGHS.encode()
        header = (f"<a:MessageID>urn:uuid:{uuid.uuid4()}</a:MessageID><a:RelatesTo>{relates_to}</a:RelatesTo>"
                  "<a:To>http://schemas.xmlsoap.org/ws/2004/08/addressing/role/anonymous</a:To>"
                  "<a:Action>http://schemas.xmlsoap.org/ws/2005/04/discovery/ProbeMatches</a:Action>")
        scopes = " ".join(("onvif://www.onvif.org/type/video_encoder", "onvif://www.onvif.org/Profile/Streaming",
                           f"onvif://www.onvif.org/name/{self.args.name}", "onvif://www.onvif.org/hardware/TC-1"))
        body = (f"<d:ProbeMatches><d:ProbeMatch><a:EndpointReference><a:Address>{self.args.endpoint}</a:Address>"
                "</a:EndpointReference><d:Types>dn:NetworkVideoTransmitter tds:Device</d:Types>"
                f"<d:Scopes>{scopes}</d:Scopes><d:XAddrs>{self.http}/onvif/device_service</d:XAddrs>"
                "<d:MetadataVersion>1</d:MetadataVersion></d:ProbeMatch></d:ProbeMatches>")
        return envelope(body, header)

    # -- SOAP ----------------------------------------------------------------------------------------

    async def soap(self, request: web.Request) -> web.Response:
        if self.args.mode == "not-onvif":
            return web.Response(status=404, text="<html><body><h1>Not Found</h1></body></html>",
                                content_type="text/html")
        root = ElementTree.fromstring(await request.read())
        operation = next(iter(root.find(f"{{{SOAP}}}Body"))).tag.rpartition("}")[2]
        print(f"request {operation}", file=sys.stderr, flush=True)
        if operation not in PRE_AUTH:
            if self.args.mode == "http-digest":
                if not self.digest_ok(request):
                    return web.Response(status=401, headers={"WWW-Authenticate": (
                        f'Digest realm="{REALM}", qop="auth", nonce="{secrets.token_hex(16)}", algorithm=MD5')})
            elif not self.token_ok(root):
                return self.fault(400, "env:Sender", "ter:NotAuthorized", "Sender not Authorized")
        body = self.answer(operation, root)
        if body is None:
            return self.fault(400, "env:Receiver", "ter:ActionNotSupported", f"{operation} is not supported")
        if isinstance(body, bytes):
            return web.Response(body=body, content_type="application/soap+xml")
        return web.Response(body=envelope(body), content_type="application/soap+xml")

    def token_ok(self, root: ElementTree.Element) -> bool:
        token = root.find(f"{{{SOAP}}}Header/{{{WSSE}}}Security/{{{WSSE}}}UsernameToken")
        if token is None:
            return False
        user = token.findtext(f"{{{WSSE}}}Username", "")
        digest = token.findtext(f"{{{WSSE}}}Password", "")
        nonce = base64.b64decode(token.findtext(f"{{{WSSE}}}Nonce", ""))
        created = token.findtext(f"{{{WSU}}}Created", "")
        expected = base64.b64encode(hashlib.sha1(nonce + created.encode() + self.password.encode()).digest()).decode()
        try:
            created_s = datetime.fromisoformat(created.replace("Z", "+00:00")).timestamp()
        except ValueError:
            return False
        return user == self.args.user and secrets.compare_digest(digest, expected) and abs(created_s - self.now()) < 300

    def digest_ok(self, request: web.Request) -> bool:
        header = request.headers.get("Authorization", "")
        if not header.startswith("Digest "):
            return False
        fields = {key: quoted or bare for key, quoted, bare in re.findall(r'(\w+)=(?:"([^"]*)"|([^,\s]*))', header)}
        ha1 = hashlib.md5(f"{self.args.user}:{REALM}:{self.password}".encode()).hexdigest()
        ha2 = hashlib.md5(f"{request.method}:{fields.get('uri', '')}".encode()).hexdigest()
        expected = hashlib.md5(f"{ha1}:{fields.get('nonce')}:{fields.get('nc')}:{fields.get('cnonce')}:"
                               f"{fields.get('qop')}:{ha2}".encode()).hexdigest()
        return fields.get("username") == self.args.user and secrets.compare_digest(fields.get("response", ""), expected)

    def fault(self, status: int, code: str, subcode: str, reason: str) -> web.Response:
        body = (f"<s:Fault><s:Code><s:Value>{code}</s:Value><s:Subcode><s:Value>{subcode}</s:Value></s:Subcode>"
                f'</s:Code><s:Reason><s:Text xml:lang="en">{reason}</s:Text></s:Reason></s:Fault>')
        return web.Response(status=status, body=envelope(body), content_type="application/soap+xml")

    def answer(self, operation: str, root: ElementTree.Element) -> str | bytes | None:
        if operation == "GetSystemDateAndTime":
            now = datetime.fromtimestamp(self.now(), tz=timezone.utc)
            return ("<tds:GetSystemDateAndTimeResponse><tds:SystemDateAndTime><tt:DateTimeType>NTP</tt:DateTimeType>"
                    "<tt:DaylightSavings>false</tt:DaylightSavings><tt:UTCDateTime>"
                    f"<tt:Time><tt:Hour>{now.hour}</tt:Hour><tt:Minute>{now.minute}</tt:Minute>"
                    f"<tt:Second>{now.second}</tt:Second></tt:Time><tt:Date><tt:Year>{now.year}</tt:Year>"
                    f"<tt:Month>{now.month}</tt:Month><tt:Day>{now.day}</tt:Day></tt:Date></tt:UTCDateTime>"
                    "</tds:SystemDateAndTime></tds:GetSystemDateAndTimeResponse>")
        if operation == "GetServices":
            return ("<tds:GetServicesResponse>"
                    "<tds:Service><tds:Namespace>http://www.onvif.org/ver10/device/wsdl</tds:Namespace>"
                    f"<tds:XAddr>{self.http}/onvif/device_service</tds:XAddr></tds:Service>"
                    "<tds:Service><tds:Namespace>http://www.onvif.org/ver10/media/wsdl</tds:Namespace>"
                    f"<tds:XAddr>{self.http}/onvif/media_service</tds:XAddr></tds:Service>"
                    "</tds:GetServicesResponse>")
        if operation == "GetDeviceInformation":
            return ("<tds:GetDeviceInformationResponse><tds:Manufacturer>Acme</tds:Manufacturer>"
                    "<tds:Model>TC-1</tds:Model><tds:FirmwareVersion>5.7.3</tds:FirmwareVersion>"
                    f"<tds:SerialNumber>{self.args.name}-0001</tds:SerialNumber><tds:HardwareId>1</tds:HardwareId>"
                    "</tds:GetDeviceInformationResponse>")
        if operation == "GetProfiles":
            if self.args.mode == "bad-xml":
                return envelope("<trt:GetProfilesResponse><trt:Profiles token='x'><tt:Name>a</tt:Nam>")
            if self.args.mode == "xml-bomb":
                return BILLION_LAUGHS.encode()
            return "<trt:GetProfilesResponse>" + "".join(self.profile(*profile) for profile in PROFILES) + \
                "</trt:GetProfilesResponse>"
        if operation == "GetStreamUri":
            token = root.findtext(".//{http://www.onvif.org/ver10/media/wsdl}ProfileToken", "")
            path = next((profile[6] for profile in PROFILES if profile[0] == token and profile[6]), None)
            if path is None:
                return None
            return (f"<trt:GetStreamUriResponse><trt:MediaUri><tt:Uri>rtsp://{self.args.address}:554{path}</tt:Uri>"
                    "<tt:InvalidAfterConnect>false</tt:InvalidAfterConnect><tt:InvalidAfterReboot>false"
                    "</tt:InvalidAfterReboot><tt:Timeout>PT0S</tt:Timeout></trt:MediaUri></trt:GetStreamUriResponse>")
        return None

    @staticmethod
    def profile(token: str, name: str, width: int, height: int, fps: int, kbps: int, path: str) -> str:
        video = "" if not path else (
            f'<tt:VideoEncoderConfiguration token="enc_{token}"><tt:Name>enc</tt:Name><tt:UseCount>1</tt:UseCount>'
            f"<tt:Encoding>H264</tt:Encoding><tt:Resolution><tt:Width>{width}</tt:Width><tt:Height>{height}"
            f"</tt:Height></tt:Resolution><tt:Quality>4</tt:Quality><tt:RateControl><tt:FrameRateLimit>{fps}"
            f"</tt:FrameRateLimit><tt:EncodingInterval>1</tt:EncodingInterval><tt:BitrateLimit>{kbps}"
            "</tt:BitrateLimit></tt:RateControl></tt:VideoEncoderConfiguration>")
        return f'<trt:Profiles token="{token}" fixed="true"><tt:Name>{name}</tt:Name>{video}</trt:Profiles>'


class Discovery(asyncio.DatagramProtocol):
    def __init__(self, camera: Camera, reply: socket.socket) -> None:
        self.camera = camera
        self.reply = reply

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        try:
            root = ElementTree.fromstring(data)
        except ElementTree.ParseError:
            return
        probe = root.find(".//{http://schemas.xmlsoap.org/ws/2005/04/discovery}Probe")
        message_id = root.findtext(".//{http://schemas.xmlsoap.org/ws/2004/08/addressing}MessageID", "")
        if probe is None or not message_id:
            return
        types = [name.rpartition(":")[2] for name in
                 probe.findtext("{http://schemas.xmlsoap.org/ws/2005/04/discovery}Types", "").split()]
        if types and not set(types) <= {"NetworkVideoTransmitter", "Device"}:
            return
        print(f"probe from {addr[0]} for {' '.join(types) or 'any type'}", file=sys.stderr, flush=True)
        answer = self.camera.probe_match(message_id)
        asyncio.get_running_loop().call_later(random.uniform(0, 0.3), self.reply.sendto, answer, addr)


async def serve(args: argparse.Namespace) -> None:
    camera = Camera(args)
    app = web.Application()
    app.router.add_post("/onvif/device_service", camera.soap)
    app.router.add_post("/onvif/media_service", camera.soap)
    app.router.add_route("*", "/{anything:.*}", camera.soap)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, args.address, args.port).start()
    if args.mode != "not-onvif":
        listen = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_UDP)
        listen.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)   # several cameras in one namespace
        listen.bind(("239.255.255.250", 3702))
        membership = struct.pack("=4s4si", socket.inet_aton("239.255.255.250"), socket.inet_aton(args.address),
                                 socket.if_nametoindex(args.interface))
        listen.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, membership)
        reply = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        reply.bind((args.address, 0))
        await asyncio.get_running_loop().create_datagram_endpoint(lambda: Discovery(camera, reply), sock=listen)
    print("ready", flush=True)
    await asyncio.Event().wait()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--address", required=True)
    parser.add_argument("--interface", required=True)
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--user", default="admin")
    parser.add_argument("--password-file", required=True)
    parser.add_argument("--endpoint", default=f"urn:uuid:{uuid.uuid4()}")
    parser.add_argument("--name", default="gate")
    parser.add_argument("--clock-offset-s", type=float, default=0.0)
    parser.add_argument("--mode", default="normal", choices=["normal", "http-digest", "bad-xml", "xml-bomb",
                                                             "bad-probe-xml", "probe-bomb", "not-onvif"])
    asyncio.run(serve(parser.parse_args()))


if __name__ == "__main__":
    main()
