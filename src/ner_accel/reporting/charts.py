"""SVG line charts drawn in Python, for a report that needs no script and no network to be looked at."""

from __future__ import annotations

import math
from html import escape

# Okabe-Ito colours: told apart by people with the common colour-vision deficiencies.
COLOURS = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#7F7F7F", "#F0E442"]
WIDTH, HEIGHT, LEFT, RIGHT, TOP, BOTTOM = 520, 260, 60, 16, 34, 40
MAX_MARKERS = 60  # dots (with a tooltip) on each point of a series up to this many points; beyond, the line alone


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """About `count` round tick values (1, 2 or 5 times a power of ten apart) from at or below low to at or above
    high: the axis runs from the first to the last."""
    if high <= low:
        high = low + (abs(low) or 1.0)
    raw = (high - low) / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw * (1 - 1e-9))
    first, last = math.floor(low / step + 1e-9), math.ceil(high / step - 1e-9)
    return [k * step for k in range(first, last + 1)]


def figure(caption: str, svg: str) -> str:
    return f"<figure><figcaption>{escape(caption)}</figcaption>{svg}</figure>"


def line_chart(series: list[tuple[str, list[tuple[float, float]]]], x_label: str, y_label: str) -> str:
    """One <svg>: axes from 0 with round ticks and grid lines, one <polyline> per series (non-finite values
    skipped), a dot with a tooltip per point, and a legend above the plot."""
    series = [(name, [(x, y) for x, y in points if math.isfinite(x) and math.isfinite(y)]) for name, points in series]
    xs = [x for _, points in series for x, _ in points] or [0.0]
    ys = [y for _, points in series for _, y in points] or [0.0]
    x_ticks, y_ticks = nice_ticks(min(0, *xs), max(xs)), nice_ticks(min(0, *ys), max(ys))

    def sx(x: float) -> float:
        return LEFT + (x - x_ticks[0]) / (x_ticks[-1] - x_ticks[0]) * (WIDTH - LEFT - RIGHT)

    def sy(y: float) -> float:
        return HEIGHT - BOTTOM - (y - y_ticks[0]) / (y_ticks[-1] - y_ticks[0]) * (HEIGHT - TOP - BOTTOM)

    bottom, right = HEIGHT - BOTTOM, WIDTH - RIGHT
    parts = [f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{escape(y_label)} by step">']
    for y in y_ticks:
        parts.append(f'<line class="grid-line" x1="{LEFT}" x2="{right}" y1="{sy(y):.1f}" y2="{sy(y):.1f}"/>')
        parts.append(f'<text x="{LEFT - 6}" y="{sy(y) + 4:.1f}" text-anchor="end">{y:g}</text>')
    for x in x_ticks:
        parts.append(f'<line class="axis" x1="{sx(x):.1f}" x2="{sx(x):.1f}" y1="{bottom}" y2="{bottom + 5}"/>')
        parts.append(f'<text x="{sx(x):.1f}" y="{bottom + 17}" text-anchor="middle">{x:g}</text>')
    parts.append(f'<line class="axis" x1="{LEFT}" x2="{right}" y1="{bottom}" y2="{bottom}"/>')
    parts.append(f'<line class="axis" x1="{LEFT}" x2="{LEFT}" y1="{TOP}" y2="{bottom}"/>')
    parts.append(f'<text x="{(LEFT + right) / 2}" y="{HEIGHT - 4}" text-anchor="middle">{escape(x_label)}</text>')
    parts.append(
        f'<text transform="translate(14 {(TOP + bottom) / 2}) rotate(-90)" text-anchor="middle">{escape(y_label)}</text>'
    )
    legend_x = LEFT
    for number, (name, points) in enumerate(series):
        colour = "#222" if name == "mean" else COLOURS[number % len(COLOURS)]
        kind = "series mean" if name == "mean" else "series"
        coordinates = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in points)
        parts.append(
            f'<polyline class="{kind}" data-series="{escape(name)}" stroke="{colour}" points="{coordinates}"/>'
        )
        if len(points) <= MAX_MARKERS:
            parts += [
                f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="2.6" fill="{colour}"><title>{escape(name)}, step '
                f"{x:g}: {y:.4g}</title></circle>"
                for x, y in points
            ]
        parts.append(f'<line class="{kind}" x1="{legend_x}" x2="{legend_x + 18}" y1="14" y2="14" stroke="{colour}"/>')
        parts.append(f'<text x="{legend_x + 22}" y="18">{escape(name)}</text>')
        legend_x += 34 + 7 * len(name)
    parts.append("</svg>")
    return "".join(parts)
