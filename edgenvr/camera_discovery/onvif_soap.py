"""The wire form of ONVIF for `edgenvr discover`: SOAP 1.2 envelopes, the WS-Security UsernameToken, SOAP
faults, and the one way XML from the network is parsed (`parse_untrusted`).

Invariants: every byte of XML that comes from the network goes through `parse_untrusted` (defusedxml's
ElementTree with DTDs forbidden, so no entity expansion, no external references, and at most
`MAX_MESSAGE_BYTES`); text we put into a message is escaped here (`text`); a password only ever leaves this
module as its UsernameToken digest (SHA-1 over nonce, time and password, as ONVIF requires).

Why no ONVIF library (evaluated on this machine, Debian 12, Python 3.11):
- `onvif-zeep-async` 4.3 (maintained, async, on aiohttp) ships its WSDLs and works offline (tried in a
  network namespace with no route out), but brings zeep, lxml, httpx, httpcore, requests-toolbelt, isodate,
  ciso8601 and platformdirs: ~18 MB more on the box for what edgenvr uses (lxml alone is 12 MB), parses the
  Device and Media WSDLs at every start (0.25 s), peaks at 65 MB RSS where aiohttp and ElementTree need
  34 MB, and calls `logging.basicConfig` when imported (it would reconfigure the CLI's logging).
- `wsdiscovery` 2.1 is a threaded daemon (its asyncio module is a placeholder), binds UDP port 3702 for
  itself, sleeps the whole timeout, parses replies with `xml.dom.minidom` (not hardened against hostile
  XML) and turns any error while sending into "Server not started" (a bare `except:`).
- What `discover` needs is six fixed request shapes (Probe; GetSystemDateAndTime, GetServices or
  GetCapabilities, GetDeviceInformation; GetProfiles, GetStreamUri) and a few fields of each answer, so a
  WSDL engine buys nothing. aiohttp is already a dependency (HTTP, timeouts, and HTTP Digest through its
  `DigestAuthMiddleware` for cameras that want it), `defusedxml` (0.1 MB, pure Python, the parser Python's
  own documentation points to for untrusted XML) parses, and the messages are templates below.
"""

from __future__ import annotations

import base64
import hashlib
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass
from datetime import datetime, timezone
from xml.sax.saxutils import escape

import defusedxml
import defusedxml.ElementTree as SafeElementTree

# Namespaces, by the prefixes ONVIF's documents use.
SOAP_ENV = "http://www.w3.org/2003/05/soap-envelope"
WSA = "http://schemas.xmlsoap.org/ws/2004/08/addressing"
WSD = "http://schemas.xmlsoap.org/ws/2005/04/discovery"
WSSE = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd"
WSU = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd"
TDS = "http://www.onvif.org/ver10/device/wsdl"
TRT = "http://www.onvif.org/ver10/media/wsdl"
TT = "http://www.onvif.org/ver10/schema"
DN = "http://www.onvif.org/ver10/network/wsdl"

_PASSWORD_DIGEST = ("http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-username-token-profile-1.0"
                    "#PasswordDigest")
_BASE64_BINARY = ("http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-soap-message-security-1.0"
                  "#Base64Binary")

#: The largest message read from a device. A GetProfiles answer of a 16-channel recorder is ~200 KB; a
#: larger one is refused before parsing rather than held in memory.
MAX_MESSAGE_BYTES = 1024 * 1024


class XmlProblem(Exception):
    """XML from the network that was not used: too large, a DTD or entities (bombs), or not well-formed.
    The message says which, for a person, without quoting the content."""


def parse_untrusted(data: bytes) -> ElementTree.Element:
    """The root element of ``data``, XML from the network; XmlProblem if it cannot be trusted or read.

    SOAP forbids DTDs (SOAP 1.2 part 1, 5), so any DTD is refused: that stops "billion laughs" and quadratic
    entity bombs before a single entity is expanded, and external entities before anything is fetched."""
    if len(data) > MAX_MESSAGE_BYTES:
        raise XmlProblem(f"the message is larger than {MAX_MESSAGE_BYTES // 1024} KB")
    try:
        return SafeElementTree.fromstring(data, forbid_dtd=True)
    except defusedxml.DTDForbidden:
        raise XmlProblem("it declares a DTD, which SOAP forbids (refused unread: it could be an XML bomb)") from None
    except (defusedxml.EntitiesForbidden, defusedxml.ExternalReferenceForbidden):
        raise XmlProblem("it declares entities (refused unread: it could be an XML bomb)") from None
    except ElementTree.ParseError as exc:
        line, column = exc.position
        raise XmlProblem(f"it is not well-formed XML (line {line}, column {column})") from None
    except (ValueError, UnicodeError) as exc:   # an encoding declaration that lies, bytes that decode to nothing
        raise XmlProblem(f"it is not readable XML ({type(exc).__name__})") from None


def text(value: str) -> str:
    """``value`` escaped for an XML element's text or a double-quoted attribute."""
    return escape(value, {'"': "&quot;"})


def envelope(body: str, header: str = "", namespaces: dict[str, str] | None = None) -> bytes:
    """A SOAP 1.2 envelope around ``body`` (XML text using the prefixes s, a, d, dn, tds, trt, tt and any in
    ``namespaces``), UTF-8."""
    declared = {"s": SOAP_ENV, "a": WSA, "d": WSD, "dn": DN, "tds": TDS, "trt": TRT, "tt": TT, **(namespaces or {})}
    attributes = " ".join(f'xmlns:{prefix}="{uri}"' for prefix, uri in declared.items())
    return (f'<?xml version="1.0" encoding="UTF-8"?>\n<s:Envelope {attributes}>'
            f"<s:Header>{header}</s:Header><s:Body>{body}</s:Body></s:Envelope>").encode("utf-8")


def username_token(user: str, password: str, created_ms: int, nonce: bytes) -> str:
    """The WS-Security header ONVIF devices check: PasswordDigest = Base64(SHA-1(nonce + created +
    password)). ``created_ms`` must be the device's clock (epoch ms, UTC): devices refuse tokens created far
    from their own time, so callers add the offset GetSystemDateAndTime showed."""
    created = datetime.fromtimestamp(created_ms / 1000, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.") + \
        f"{created_ms % 1000:03d}Z"
    digest = base64.b64encode(hashlib.sha1(nonce + created.encode() + password.encode("utf-8")).digest()).decode()
    return (f'<wsse:Security s:mustUnderstand="1" xmlns:wsse="{WSSE}" xmlns:wsu="{WSU}"><wsse:UsernameToken>'
            f"<wsse:Username>{text(user)}</wsse:Username>"
            f'<wsse:Password Type="{_PASSWORD_DIGEST}">{digest}</wsse:Password>'
            f'<wsse:Nonce EncodingType="{_BASE64_BINARY}">{base64.b64encode(nonce).decode()}</wsse:Nonce>'
            f"<wsu:Created>{created}</wsu:Created></wsse:UsernameToken></wsse:Security>")


@dataclass(frozen=True)
class SoapFault:
    """A SOAP fault: its code (Sender/Receiver), subcodes (ONVIF's ter:NotAuthorized, ter:ActionNotSupported,
    ...; local names only, since prefixes are the sender's choice) and reason text."""

    code: str
    subcodes: tuple[str, ...]
    reason: str

    @property
    def not_authorized(self) -> bool:
        return "NotAuthorized" in self.subcodes or "FailedAuthentication" in self.subcodes

    def describe(self) -> str:
        subcodes = "/".join(self.subcodes)
        return f"{self.code}{'/' + subcodes if subcodes else ''}: {self.reason or 'no reason given'}"


def body_of(root: ElementTree.Element) -> ElementTree.Element | None:
    """The first element inside a SOAP 1.2 envelope's Body; None if ``root`` is no SOAP 1.2 envelope."""
    if root.tag != f"{{{SOAP_ENV}}}Envelope":
        return None
    body = root.find(f"{{{SOAP_ENV}}}Body")
    if body is None:
        return None
    return next(iter(body), None)


def fault_of(element: ElementTree.Element) -> SoapFault | None:
    """The fault ``element`` (a Body's content) is, or None."""
    if element.tag != f"{{{SOAP_ENV}}}Fault":
        return None
    code = element.find(f"{{{SOAP_ENV}}}Code")
    subcodes: list[str] = []
    value = ""
    if code is not None:
        value = local_name(code.findtext(f"{{{SOAP_ENV}}}Value", ""))
        subcode = code.find(f"{{{SOAP_ENV}}}Subcode")
        while subcode is not None:
            subcodes.append(local_name(subcode.findtext(f"{{{SOAP_ENV}}}Value", "")))
            subcode = subcode.find(f"{{{SOAP_ENV}}}Subcode")
    reason = element.findtext(f"{{{SOAP_ENV}}}Reason/{{{SOAP_ENV}}}Text", "")
    return SoapFault(value, tuple(subcodes), " ".join(reason.split())[:300])


def local_name(qualified: str) -> str:
    """"ter:NotAuthorized" -> "NotAuthorized"; "{uri}Tag" -> "Tag"."""
    return qualified.strip().rpartition("}")[2].rpartition(":")[2]


def child_text(element: ElementTree.Element | None, *path: str) -> str | None:
    """The stripped text at ``path`` (namespaced tags) under ``element``, or None where any step is missing."""
    for tag in path:
        if element is None:
            return None
        element = element.find(tag)
    if element is None:
        return None
    return (element.text or "").strip()
