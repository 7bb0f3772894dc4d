"""edgenvr: an edge video recorder that copies RTSP camera streams into a crash-safe disk ring."""

__version__ = "0.1.0"
