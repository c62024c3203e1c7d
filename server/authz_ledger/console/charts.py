"""Decision rates over time as inline SVG, drawn on the server from the console index's per-minute counts.

Inline SVG rather than a JavaScript charting library: the chart is a page's HTML, so it shows with scripts off,
prints, and can be embedded unchanged in a self-contained HTML report (an evidence pack's) with no asset to
ship. What it draws is small: stacked allow / deny / error bars per bucket, and a marker where the deciding
policy version changed.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from html import escape

from authz_ledger.console.index import MinuteStats

WIDTH, HEIGHT, PAD_LEFT, PAD_BOTTOM = 960, 220, 48, 28
COLOURS = {"allow": "#2e7d32", "deny": "#c62828", "error": "#ef6c00"}


@dataclass(frozen=True)
class Bucket:
    start_ns: int
    allow: int = 0
    deny: int = 0
    error: int = 0

    @property
    def total(self) -> int:
        return self.allow + self.deny + self.error


def buckets(minutes: Iterable[MinuteStats], since_ns: int, until_ns: int, count: int = 60) -> list[Bucket]:
    """About ``count`` equal buckets of whole minutes covering [since, until), each the sum of the minutes that
    start in it (bucket edges on multiples of the bucket width, so a minute is never split)."""
    minute = 60_000_000_000
    span = max(until_ns - since_ns, minute)
    width = max(span // count // minute, 1) * minute
    since_ns -= since_ns % width
    count = -(-(until_ns - since_ns) // width)
    sums = [[0, 0, 0] for _ in range(count)]
    for m in minutes:
        i = (m.minute * 60_000_000_000 - since_ns) // width
        if 0 <= i < count:
            sums[i][0] += m.allow
            sums[i][1] += m.deny
            sums[i][2] += m.error + m.other
    return [Bucket(since_ns + i * width, *s) for i, s in enumerate(sums)]


def _label(ns: int, span_ns: int) -> str:
    when = datetime.datetime.fromtimestamp(ns / 1e9, datetime.UTC)
    return when.strftime("%H:%M" if span_ns <= 86_400_000_000_000 else "%m-%d %H:%M")


def rates_svg(data: Sequence[Bucket], versions: Sequence[tuple[int, int, str]] = ()) -> str:
    """Stacked bars (allow bottom, deny, error top) with an axis, and a dashed line per policy-version change."""
    if not data:
        return '<svg xmlns="http://www.w3.org/2000/svg" role="img" aria-label="no decisions"></svg>'
    start, step = data[0].start_ns, (data[1].start_ns - data[0].start_ns) if len(data) > 1 else 60_000_000_000
    end = start + step * len(data)
    top = max((b.total for b in data), default=0) or 1
    plot_w, plot_h = WIDTH - PAD_LEFT, HEIGHT - PAD_BOTTOM
    bar_w = plot_w / len(data)
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'aria-label="decisions per bucket, allow, deny and error" class="chart">',
        f'<text x="{PAD_LEFT - 6}" y="12" text-anchor="end" class="axis">{top}</text>',
        f'<text x="{PAD_LEFT - 6}" y="{plot_h}" text-anchor="end" class="axis">0</text>',
        f'<line x1="{PAD_LEFT}" y1="{plot_h}" x2="{WIDTH}" y2="{plot_h}" class="axisline"/>',
    ]
    for i, b in enumerate(data):
        x = PAD_LEFT + i * bar_w
        y = float(plot_h)
        for name in ("allow", "deny", "error"):
            n = getattr(b, name)
            if n:
                h = plot_h * n / top
                y -= h
                out.append(
                    f'<rect x="{x:.1f}" y="{y:.1f}" width="{max(bar_w - 1, 1):.1f}" height="{h:.1f}" '
                    f'fill="{COLOURS[name]}"><title>{escape(_label(b.start_ns, end - start))}: {n} {name}</title>'
                    "</rect>"
                )
    for i in range(0, len(data), max(len(data) // 6, 1)):
        x = PAD_LEFT + i * bar_w
        out.append(
            f'<text x="{x:.1f}" y="{HEIGHT - 8}" class="axis">{escape(_label(data[i].start_ns, end - start))}</text>'
        )
    for seq, t, version in versions:
        if start <= t < end:
            x = PAD_LEFT + plot_w * (t - start) / (end - start)
            out.append(
                f'<line x1="{x:.1f}" y1="0" x2="{x:.1f}" y2="{plot_h}" class="version">'
                f"<title>policy version {escape(version or '(none)')} from entry {seq}</title></line>"
            )
    out.append("</svg>")
    return "".join(out)
