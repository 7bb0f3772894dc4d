"""Finding ONVIF cameras on the LAN and reading their stream URIs, for `edgenvr discover`.

Nothing here runs while recording: it is the commissioning tool that writes a camera's [[cameras]] table.
`ws_discovery` probes the LAN (WS-Discovery over UDP multicast), `onvif_device` asks one device for its
profiles and RTSP URIs (ONVIF Device and Media services, SOAP over HTTP), `onvif_soap` is the wire form of
both (and says why it is not zeep), `camera_entries` turns the answers into config tables.
"""
