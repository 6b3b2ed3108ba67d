"""Small bar charts drawn by the server: the geometry of an SVG of stacked bars (completed at
the bottom, failed on top), one bar per time bucket, scaled to the busiest bucket. Templates
draw the rectangles; no chart library, no script."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

MIN_VISIBLE = 1.5  # px: a bucket with any job shows, however small against the peak


@dataclass(frozen=True)
class Bar:
    x: float
    width: float
    ok_y: float
    ok_height: float
    ko_y: float
    ko_height: float
    title: str


@dataclass(frozen=True)
class Chart:
    width: int
    height: int
    bars: list[Bar]
    peak: int


def _height(count: int, peak: int, height: float) -> float:
    if not count:
        return 0.0
    return max(height * count / peak, MIN_VISIBLE)


def stacked_bars(
    series: list[dict], step: dt.timedelta, width: int = 240, height: int = 44
) -> Chart:
    """``series``: buckets ``{"start", "completed", "failed"}``, oldest first, each ``step``
    long."""
    peak = max((bucket["completed"] + bucket["failed"] for bucket in series), default=0)
    slot = width / max(len(series), 1)
    gap = min(2.0, slot * 0.2)
    bars = []
    for index, bucket in enumerate(series):
        ok = _height(bucket["completed"], peak, height)
        ko = _height(bucket["failed"], peak, height)
        if ok + ko > height:  # the minimum visible heights may overflow a full bar
            ok = max(height - ko, 0.0)
        start = bucket["start"].astimezone(dt.UTC)
        end = start + step
        bars.append(
            Bar(
                x=round(index * slot + gap / 2, 2),
                width=round(slot - gap, 2),
                ok_y=round(height - ok, 2),
                ok_height=round(ok, 2),
                ko_y=round(height - ok - ko, 2),
                ko_height=round(ko, 2),
                title=(
                    f"{start:%H:%M}-{end:%H:%M} UTC: {bucket['completed']} completed, "
                    f"{bucket['failed']} failed"
                ),
            )
        )
    return Chart(width=width, height=height, bars=bars, peak=peak)
