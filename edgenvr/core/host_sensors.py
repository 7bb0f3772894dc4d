"""What the machine's kernel says about its own health: the temperature of its hottest sensor.

Owns the one reading of it that the box's health report to the hub (sync.box_report) and the metrics route
(web.box_metrics) both show, so both say the same thing. Read-only and cheap (sysfs files), so it is read when
asked, never kept.
Failure paths: no sensor (a VM, a container), a platform psutil cannot read, or an unreadable sysfs file ->
None (the report says null, the metric is left out); nothing is raised.
"""

from __future__ import annotations

import psutil


def hottest_temperature_c() -> float | None:
    """The hottest sensor the kernel reports (a Pi's SoC, an x86's package), rounded to 0.1 °C; None without
    sensors."""
    try:
        sensors = psutil.sensors_temperatures()
    except (AttributeError, OSError):   # not on this platform, or unreadable
        return None
    readings = [entry.current for entries in sensors.values() for entry in entries if entry.current]
    return round(max(readings), 1) if readings else None
