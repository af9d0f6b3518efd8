"""SIZE, PROCESSOR and UNTIL exactly as `ollama ps` prints them (ollama-behaviour.md §8.3)."""

from __future__ import annotations

import math
from datetime import datetime

_UNITS = ((1000**4, "TB"), (1000**3, "GB"), (1000**2, "MB"), (1000, "KB"))


def human_bytes(size: int) -> str:
    """Ollama's format.HumanBytes: decimal units, one decimal below 10 (`4.7 GB`, `14 GB`)."""
    for unit_size, unit in _UNITS:
        if size >= unit_size:
            value = size / unit_size
            if value >= 10 or value == math.trunc(value):
                return f"{int(value)} {unit}"
            return f"{value:.1f} {unit}"
    return f"{size} B"


def processor(size: int, size_vram: int) -> str:
    """`100% GPU`, `100% CPU`, or the CPU/GPU split with the CPU share first."""
    if size_vram == 0:
        return "100% CPU"
    if size_vram == size:
        return "100% GPU"
    if size_vram > size or size == 0:
        return "Unknown"
    cpu = round((size - size_vram) / size * 100)
    return f"{cpu}%/{100 - cpu}% CPU/GPU"


def _human_duration(seconds_total: float) -> str:
    """Ollama's format.humanDuration."""
    seconds = int(seconds_total)
    if seconds < 1:
        return "Less than a second"
    if seconds == 1:
        return "1 second"
    if seconds < 60:
        return f"{seconds} seconds"
    minutes = int(seconds_total / 60)
    if minutes == 1:
        return "About a minute"
    if minutes < 60:
        return f"{minutes} minutes"
    hours = round(seconds_total / 3600)
    if hours == 1:
        return "About an hour"
    if hours < 48:
        return f"{hours} hours"
    if hours < 24 * 7 * 2:
        return f"{hours // 24} days"
    if hours < 24 * 30 * 2:
        return f"{hours // 24 // 7} weeks"
    if hours < 24 * 365 * 2:
        return f"{hours // 24 // 30} months"
    return f"{int(seconds_total / 3600 / 24 / 365)} years"


def until(expires_at: datetime | None, now: datetime) -> str:
    """`Forever` for a pinned model (more than 20 years ahead), `Stopping...` once past, else
    `4 minutes from now`."""
    if expires_at is None:
        return "Never"
    delta = (now - expires_at).total_seconds()
    if delta > 0:
        return "Stopping..."
    # Go: int(delta.Hours())/24/365 < -20, with integer division truncating towards zero.
    if int(int(delta / 3600) / 24 / 365) < -20:
        return "Forever"
    return _human_duration(-delta) + " from now"
