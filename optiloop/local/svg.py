"""Small, dependency-free SVG charts for the run report (the report must open without a network).

Each function returns an ``<svg>`` element as a string; values are escaped, axes get ticks at
round numbers, and empty inputs give a short "no data" figure instead of failing.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

WIDTH, HEIGHT = 640, 360
LEFT, RIGHT, TOP, BOTTOM = 70, 20, 20, 50
DASHED = 'stroke="#dc2626" stroke-dasharray="4 3"'
PALETTE = ("#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#4b5563", "#ca8a04")


@dataclass
class Point:
    x: float
    y: float
    label: str = ""
    size: float = 5.0
    color: str = PALETTE[0]


def _ticks(low: float, high: float, count: int = 5) -> list[float]:
    if not math.isfinite(low) or not math.isfinite(high):
        return []
    if high - low < 1e-12:
        return [low]
    raw = (high - low) / count
    step = 10 ** math.floor(math.log10(raw))
    for factor in (1, 2, 5, 10):
        if raw <= step * factor:
            step *= factor
            break
    first = math.ceil(low / step) * step
    return [first + i * step for i in range(int((high - first) / step) + 1)]


def _fmt(value: float) -> str:
    return f"{value:.3g}"


class _Frame:
    def __init__(self, xs: Sequence[float], ys: Sequence[float], x_label: str, y_label: str) -> None:
        xs = [x for x in xs if math.isfinite(x)] or [0.0, 1.0]
        ys = [y for y in ys if math.isfinite(y)] or [0.0, 1.0]
        pad_x = (max(xs) - min(xs)) * 0.08 or abs(max(xs)) * 0.1 or 1.0
        pad_y = (max(ys) - min(ys)) * 0.08 or abs(max(ys)) * 0.1 or 1.0
        self.x0, self.x1 = min(xs) - pad_x, max(xs) + pad_x
        self.y0, self.y1 = min(ys) - pad_y, max(ys) + pad_y
        self.x_label, self.y_label = x_label, y_label

    def px(self, x: float) -> float:
        return LEFT + (x - self.x0) / (self.x1 - self.x0) * (WIDTH - LEFT - RIGHT)

    def py(self, y: float) -> float:
        return HEIGHT - BOTTOM - (y - self.y0) / (self.y1 - self.y0) * (HEIGHT - TOP - BOTTOM)

    def axes(self) -> list[str]:
        parts = [
            f'<line x1="{LEFT}" y1="{HEIGHT - BOTTOM}" x2="{WIDTH - RIGHT}" y2="{HEIGHT - BOTTOM}" stroke="#333"/>',
            f'<line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{HEIGHT - BOTTOM}" stroke="#333"/>',
        ]
        for tick in _ticks(self.x0, self.x1):
            x = self.px(tick)
            parts.append(
                f'<line x1="{x:.1f}" y1="{HEIGHT - BOTTOM}" x2="{x:.1f}" y2="{HEIGHT - BOTTOM + 5}" stroke="#333"/>'
            )
            parts.append(f'<text x="{x:.1f}" y="{HEIGHT - BOTTOM + 18}" text-anchor="middle">{_fmt(tick)}</text>')
        for tick in _ticks(self.y0, self.y1):
            y = self.py(tick)
            parts.append(f'<line x1="{LEFT - 5}" y1="{y:.1f}" x2="{WIDTH - RIGHT}" y2="{y:.1f}" stroke="#e5e7eb"/>')
            parts.append(f'<text x="{LEFT - 8}" y="{y + 4:.1f}" text-anchor="end">{_fmt(tick)}</text>')
        parts.append(
            f'<text x="{(LEFT + WIDTH - RIGHT) / 2}" y="{HEIGHT - 10}" text-anchor="middle">'
            f"{escape(self.x_label)}</text>"
        )
        parts.append(
            f'<text transform="translate(16,{(TOP + HEIGHT - BOTTOM) / 2}) rotate(-90)" text-anchor="middle">'
            f"{escape(self.y_label)}</text>"
        )
        return parts


def _svg(body: list[str], title: str) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}" '
        f'role="img" aria-label="{escape(title)}" font-family="sans-serif" font-size="11">'
        f"<title>{escape(title)}</title>" + "".join(body) + "</svg>"
    )


def empty(title: str, message: str = "no data") -> str:
    return _svg([f'<text x="{WIDTH / 2}" y="{HEIGHT / 2}" text-anchor="middle">{escape(message)}</text>'], title)


def scatter(
    points: Sequence[Point],
    x_label: str,
    y_label: str,
    title: str,
    line: Sequence[tuple[float, float]] = (),
    vertical: Sequence[tuple[float, str]] = (),
    horizontal: Sequence[tuple[float, str]] = (),
) -> str:
    """Points (with optional labels and sizes), an optional polyline, and labelled reference lines."""
    if not points:
        return empty(title)
    xs = [p.x for p in points] + [x for x, _ in line] + [v for v, _ in vertical]
    ys = [p.y for p in points] + [y for _, y in line] + [h for h, _ in horizontal]
    frame = _Frame(xs, ys, x_label, y_label)
    body = frame.axes()
    if line:
        path = " ".join(f"{frame.px(x):.1f},{frame.py(y):.1f}" for x, y in line if math.isfinite(y))
        body.append(f'<polyline points="{path}" fill="none" stroke="{PALETTE[1]}" stroke-width="1.5"/>')
    for value, label in vertical:
        x = frame.px(value)
        body.append(f'<line x1="{x:.1f}" y1="{TOP}" x2="{x:.1f}" y2="{HEIGHT - BOTTOM}" {DASHED}/>')
        body.append(f'<text x="{x + 4:.1f}" y="{TOP + 12}" fill="#dc2626">{escape(label)}</text>')
    for value, label in horizontal:
        y = frame.py(value)
        body.append(f'<line x1="{LEFT}" y1="{y:.1f}" x2="{WIDTH - RIGHT}" y2="{y:.1f}" {DASHED}/>')
        body.append(
            f'<text x="{WIDTH - RIGHT - 4}" y="{y - 4:.1f}" text-anchor="end" fill="#dc2626">{escape(label)}</text>'
        )
    for point in points:
        if not (math.isfinite(point.x) and math.isfinite(point.y)):
            continue
        x, y = frame.px(point.x), frame.py(point.y)
        body.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="{point.size:.1f}" fill="{point.color}" fill-opacity="0.7">')
        body.append(f"<title>{escape(point.label or f'{_fmt(point.x)}, {_fmt(point.y)}')}</title></circle>")
        if point.label:
            body.append(f'<text x="{x + point.size + 3:.1f}" y="{y + 4:.1f}">{escape(point.label)}</text>')
    return _svg(body, title)


def bars(values: Sequence[tuple[str, float]], title: str, x_label: str, reference: float | None = None) -> str:
    """Horizontal bars, one per (label, value), largest scale first; an optional reference line."""
    if not values:
        return empty(title)
    height = max(HEIGHT, TOP + BOTTOM + 22 * len(values))
    top = max([v for _, v in values] + ([reference] if reference is not None else [])) or 1.0
    left, span = 200, WIDTH - 200 - RIGHT - 40
    body = []
    for index, (label, value) in enumerate(values):
        y = TOP + index * 22
        width = max(value, 0.0) / top * span
        body.append(f'<text x="{left - 6}" y="{y + 14}" text-anchor="end">{escape(label[:32])}</text>')
        body.append(f'<rect x="{left}" y="{y + 3}" width="{width:.1f}" height="15" fill="{PALETTE[0]}"/>')
        body.append(f'<text x="{left + width + 4:.1f}" y="{y + 14}">{_fmt(value)}</text>')
    if reference is not None:
        x = left + reference / top * span
        body.append(f'<line x1="{x:.1f}" y1="{TOP}" x2="{x:.1f}" y2="{TOP + 22 * len(values)}" {DASHED}/>')
    body.append(
        f'<text x="{left + span / 2}" y="{TOP + 22 * len(values) + 24}" text-anchor="middle">{escape(x_label)}</text>'
    )
    svg = _svg(body, title)
    return svg.replace(f'viewBox="0 0 {WIDTH} {HEIGHT}"', f'viewBox="0 0 {WIDTH} {height}"').replace(
        f'height="{HEIGHT}"', f'height="{height}"', 1
    )


def heatmap(matrix: Sequence[Sequence[int]], labels: Sequence[str], title: str) -> str:
    """A confusion matrix: rows are true classes, columns predicted ones; counts in the cells."""
    if not matrix:
        return empty(title)
    size = len(matrix)
    cell = min(40, (HEIGHT - TOP - BOTTOM) // max(size, 1))
    top = max(max(row) for row in matrix) or 1
    body = []
    for r, row in enumerate(matrix):
        body.append(
            f'<text x="{LEFT - 6}" y="{TOP + r * cell + cell / 2 + 4}" text-anchor="end">'
            f"{escape(labels[r][:12])}</text>"
        )
        for c, count in enumerate(row):
            shade = int(235 - 200 * count / top)
            color = f"rgb({shade},{shade + 10 if shade < 245 else 245},255)"
            x, y = LEFT + c * cell, TOP + r * cell
            body.append(f'<rect x="{x}" y="{y}" width="{cell}" height="{cell}" fill="{color}" stroke="#fff"/>')
            fill = "#fff" if count > top / 2 else "#111"
            body.append(
                f'<text x="{x + cell / 2}" y="{y + cell / 2 + 4}" text-anchor="middle" fill="{fill}">{count}</text>'
            )
    for c, label in enumerate(labels):
        body.append(
            f'<text x="{LEFT + c * cell + cell / 2}" y="{TOP + size * cell + 14}" text-anchor="middle">'
            f"{escape(label[:6])}</text>"
        )
    body.append(
        f'<text x="{LEFT + size * cell / 2}" y="{TOP + size * cell + 32}" text-anchor="middle">predicted</text>'
    )
    body.append(
        f'<text transform="translate(16,{TOP + size * cell / 2}) rotate(-90)" text-anchor="middle">true class</text>'
    )
    return _svg(body, title)
