"""RTSP cameras to crash-safe fMP4 segment files by stream copy (the recorder processes)."""
