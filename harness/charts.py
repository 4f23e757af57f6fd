"""Static SVG charts for the site: Pareto scatter, lines with error bars, history.

Pure functions from numbers to escaped SVG markup: no JavaScript, no network, deterministic
(the same input gives the same bytes). Every point is a focusable group (``tabindex="0"``)
holding its tooltip text, which the stylesheet shows on hover *and* on focus, so tooltips open
by mouse, keyboard (Tab) and touch (a tap focuses); a ``<title>`` repeats it for screen
readers. Marks (noisy, contended, ...) draw a point hollow and are named in its tooltip.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from markupsafe import Markup, escape

WIDTH, HEIGHT = 640, 380
LEFT, RIGHT, TOP, BOTTOM = 72, 170, 20, 48
PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b",
           "#e377c2", "#7f7f7f", "#bcbd22")


@dataclass(frozen=True)
class Point:
    x: float
    y: float
    label: str  # the series (variant) name
    tip: str  # the tooltip's text
    y_low: float | None = None  # error bar (CI or spread), where known
    y_high: float | None = None
    marked: bool = False  # a mark (noisy, contended, not converged): drawn hollow
    focus: bool = True  # a focusable point with its tooltip; else only on the line and band


def color(i: int) -> str:
    return PALETTE[i % len(PALETTE)]


def _ticks_log(lo: float, hi: float) -> list[float]:
    ticks = [10.0**e for e in range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1)]
    inside = [t for t in ticks if lo <= t <= hi]
    return inside if len(inside) >= 2 else [lo, hi]


def _ticks_lin(lo: float, hi: float, n: int = 5) -> list[float]:
    if hi <= lo:
        return [lo]
    raw = (hi - lo) / n
    step = 10 ** math.floor(math.log10(raw))
    step = min((m * step for m in (1, 2, 5, 10) if m * step >= raw), default=raw)
    start = math.ceil(lo / step) * step
    return [start + i * step for i in range(int((hi - start) / step + 1e-9) + 1)]


class _Axis:
    """Maps data to pixels on a linear or log scale."""

    def __init__(self, lo: float, hi: float, log: bool, start: float, length: float,
                 flip: bool) -> None:
        if log:
            lo, hi = max(lo, 1e-300), max(hi, lo * 1.01)
        elif hi <= lo:
            lo, hi = lo - 0.5, hi + 0.5
        self.lo, self.hi, self.log = lo, hi, log
        self.start, self.length, self.flip = start, length, flip
        self.named: list[str] = []  # labels of the positions 0, 1, ... (an ordinal axis)
        self._positions: dict[float, float] = {}
        self._origin = math.log(lo) if log else lo
        self._scale = 1.0 / ((math.log(hi) - math.log(lo)) if log else (hi - lo))

    def __call__(self, v: float) -> float:
        if self.named:  # an ordinal axis: a few positions, asked for again and again
            at = self._positions.get(v)
            if at is None:
                at = self._positions[v] = self._map(v)
            return at
        return self._map(v)

    def _map(self, v: float) -> float:
        frac = ((math.log(max(v, 1e-300)) if self.log else v) - self._origin) * self._scale
        frac = min(max(frac, -0.02), 1.02)
        return self.start + self.length * ((1 - frac) if self.flip else frac)

    def ticks(self) -> list[float]:
        if self.named:  # at most 6 labels, evenly spaced, the last one always
            step = max(1, math.ceil(len(self.named) / 6))
            return sorted({*range(0, len(self.named), step), len(self.named) - 1})
        return _ticks_log(self.lo, self.hi) if self.log else _ticks_lin(self.lo, self.hi)

    def label(self, v: float) -> str:
        return self.named[int(v)] if self.named else _fmt(v)


def _fmt(v: float) -> str:
    if v != 0 and (abs(v) >= 1e5 or abs(v) < 1e-3):
        return f"{v:.0e}"
    return f"{v:g}" if abs(v) >= 1 else f"{v:.3g}"


def _frame(x: _Axis, y: _Axis, x_label: str, y_label: str, aria: str) -> list[str]:
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    out = [f'<svg class="plot" viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}"'
           f' role="img" aria-label="{escape(aria)}" xmlns="http://www.w3.org/2000/svg">',
           f'<rect x="{LEFT}" y="{TOP}" width="{plot_w}" height="{plot_h}" class="frame"/>']
    for t in x.ticks():
        out.append(f'<line x1="{x(t):.1f}" x2="{x(t):.1f}" y1="{TOP}" y2="{TOP + plot_h}" '
                   f'class="grid"/><text x="{x(t):.1f}" y="{HEIGHT - BOTTOM + 15}" '
                   f'class="tick" text-anchor="middle">{escape(x.label(t))}</text>')
    for t in y.ticks():
        out.append(f'<line x1="{LEFT}" x2="{LEFT + plot_w}" y1="{y(t):.1f}" y2="{y(t):.1f}" '
                   f'class="grid"/><text x="{LEFT - 6}" y="{y(t) + 4:.1f}" class="tick" '
                   f'text-anchor="end">{_fmt(t)}</text>')
    x_scale = " (log)" if x.log else ""
    y_scale = " (log)" if y.log else ""
    out.append(f'<text x="{LEFT + plot_w / 2}" y="{HEIGHT - 10}" class="axis" '
               f'text-anchor="middle">{escape(x_label)}{x_scale}</text>')
    out.append(f'<text x="14" y="{TOP + plot_h / 2}" class="axis" text-anchor="middle" '
               f'transform="rotate(-90 14 {TOP + plot_h / 2})">{escape(y_label)}{y_scale}</text>')
    return out


def _legend(names: Sequence[str]) -> list[str]:
    out = []
    for i, name in enumerate(names):
        ly = TOP + 14 * i + 8
        out.append(f'<circle cx="{WIDTH - RIGHT + 18}" cy="{ly}" r="4" fill="{color(i)}"/>'
                   f'<text x="{WIDTH - RIGHT + 28}" y="{ly + 4}" class="legend">'
                   f'{escape(name)}</text>')
    return out


def _point(p: Point, x: _Axis, y: _Axis, fill: str) -> str:
    cx, cy = x(p.x), y(p.y)
    bar = ""
    if p.y_low is not None and p.y_high is not None and p.y_high > p.y_low:
        lo, hi = y(p.y_low), y(p.y_high)
        bar = (f'<line x1="{cx:.1f}" x2="{cx:.1f}" y1="{lo:.1f}" y2="{hi:.1f}" class="err" '
               f'stroke="{fill}"/><line x1="{cx - 3:.1f}" x2="{cx + 3:.1f}" y1="{lo:.1f}" '
               f'y2="{lo:.1f}" stroke="{fill}" class="err"/><line x1="{cx - 3:.1f}" '
               f'x2="{cx + 3:.1f}" y1="{hi:.1f}" y2="{hi:.1f}" stroke="{fill}" class="err"/>')
    style = f'fill="white" stroke="{fill}" stroke-width="2"' if p.marked else f'fill="{fill}"'
    tx = cx - 150 if cx > WIDTH - RIGHT - 120 else cx + 8
    ty = max(cy - 8, TOP + 12)
    return (f'<g class="pt" tabindex="0">{bar}<circle cx="{cx:.1f}" cy="{cy:.1f}" r="4.5" '
            f'{style}/><title>{escape(p.tip)}</title><text class="tip" x="{tx:.1f}" '
            f'y="{ty:.1f}">{escape(p.tip)}</text></g>')


def _names(points: Sequence[Point]) -> list[str]:
    return sorted({p.label for p in points})


def frontier(points: Sequence[Point], lower_x: bool = True, higher_y: bool = True
             ) -> list[Point]:
    """The Pareto-optimal points (no other point is at least as good on both axes and better
    on one), ordered by x."""
    def better_or_equal(a: Point, b: Point) -> bool:
        ax, bx = (a.x, b.x) if lower_x else (-a.x, -b.x)
        ay, by = (a.y, b.y) if higher_y else (-a.y, -b.y)
        return ax <= bx and ay >= by and (ax < bx or ay > by)

    best = [p for p in points if not any(better_or_equal(q, p) for q in points)]
    return sorted(best, key=lambda p: p.x)


def pareto(points: Sequence[Point], x_label: str, y_label: str, *, x_log: bool = True,
           higher_y: bool = True) -> Markup:
    """Scatter of variants (cost on x, lower is better; quality on y) with the frontier."""
    if not points:
        return Markup("")
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    ys = [v for p in points for v in (p.y, p.y_low, p.y_high) if v is not None]
    x = _Axis(min(p.x for p in points), max(p.x for p in points), x_log, LEFT, plot_w, False)
    y = _Axis(min(ys), max(ys), False, TOP, plot_h, True)
    names = _names(points)
    out = _frame(x, y, x_label, y_label, f"{y_label} against {x_label}, Pareto frontier")
    best = frontier(points, higher_y=higher_y)
    if len(best) > 1:
        line = " ".join(f"{x(p.x):.1f},{y(p.y):.1f}" for p in best)
        out.append(f'<polyline points="{line}" class="frontier" fill="none"/>')
    for p in sorted(points, key=lambda p: (p.label, p.x)):
        out.append(_point(p, x, y, color(names.index(p.label))))
    out += _legend(names)
    out.append("</svg>")
    return Markup("".join(out))


def _band(mine: Sequence[Point], x: _Axis, y: _Axis, fill: str) -> str:
    """The error bars of a line's points as one shaded band (where each has both ends)."""
    known = [p for p in mine if p.y_low is not None and p.y_high is not None]
    if len(known) < 2:
        return ""
    edge = [f"{x(p.x):.1f},{y(p.y_high):.1f}" for p in known]  # type: ignore[arg-type]
    edge += [f"{x(p.x):.1f},{y(p.y_low):.1f}" for p in reversed(known)]  # type: ignore[arg-type]
    return f'<polygon points="{" ".join(edge)}" fill="{fill}" class="band"/>'


def lines(points: Sequence[Point], x_label: str, y_label: str, *, x_log: bool = True,
          y_log: bool = True, x_names: Sequence[str] = ()) -> Markup:
    """One line per variant through its points (x ascending), markers and error bars.
    ``x_names``: labels of the x positions 0, 1, ... (e.g. run dates), shown as the x ticks.
    Points with ``focus`` False are only vertices of their line, their bars one shaded band
    (a history of a hundred runs stays small); the others are markers with bar and tooltip."""
    points = [p for p in points if (p.x > 0 or not x_log) and (p.y > 0 or not y_log)]
    if not points:
        return Markup("")
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    ys = [v for p in points for v in (p.y, p.y_low, p.y_high)
          if v is not None and (v > 0 or not y_log)]
    x = _Axis(min(p.x for p in points), max(p.x for p in points), x_log, LEFT, plot_w, False)
    y = _Axis(min(ys), max(ys), y_log, TOP, plot_h, True)
    if x_names:
        x = _Axis(0, max(len(x_names) - 1, 0), False, LEFT, plot_w, False)
        x.named = list(x_names)
    names = _names(points)
    out = _frame(x, y, x_label, y_label, f"{y_label} against {x_label}")
    by_name: dict[str, list[Point]] = {}
    for p in points:
        by_name.setdefault(p.label, []).append(p)
    for i, name in enumerate(names):
        mine = sorted(by_name[name], key=lambda p: p.x)
        if not all(p.focus for p in mine):
            out.append(_band(mine, x, y, color(i)))
        if len(mine) > 1:
            line = " ".join(f"{x(p.x):.1f},{y(p.y):.1f}" for p in mine)
            out.append(f'<polyline points="{line}" fill="none" stroke="{color(i)}" '
                       f'stroke-width="1.6"/>')
        out += [_point(p, x, y, color(i)) for p in mine if p.focus]
    out += _legend(names)
    out.append("</svg>")
    return Markup("".join(out))
