"""Inline SVG log-log line charts for the static site: no JavaScript, no network, deterministic."""

from __future__ import annotations

import math

from markupsafe import Markup, escape

WIDTH, HEIGHT = 640, 360
LEFT, RIGHT, TOP, BOTTOM = 70, 170, 20, 45
PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b",
           "#e377c2", "#7f7f7f", "#bcbd22")


def _decades(lo: float, hi: float) -> list[float]:
    """Powers of ten covering [lo, hi], plus the ends when fewer than two fall inside."""
    ticks = [10.0**e for e in range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1)]
    inside = [t for t in ticks if lo <= t <= hi]
    return inside if len(inside) >= 2 else [lo, hi]


def _label(v: float) -> str:
    if v >= 1024 and math.log2(v).is_integer():
        return f"{int(v) // 1024}K"
    return f"{v:g}"


def loglog(series: dict[str, dict[int, float]], x_label: str, y_label: str) -> Markup:
    """One line per name; x and y on log scales. Returns escaped, safe SVG markup."""
    pts = [(x, y) for s in series.values() for x, y in s.items() if x > 0 and y > 0]
    if not pts:
        return Markup("")
    x_lo, x_hi = min(p[0] for p in pts), max(p[0] for p in pts)
    y_lo, y_hi = min(p[1] for p in pts), max(p[1] for p in pts)
    x_hi, y_hi = max(x_hi, x_lo * 1.01), max(y_hi, y_lo * 1.01)
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def px(x: float) -> float:
        return LEFT + plot_w * (math.log(x) - math.log(x_lo)) / (math.log(x_hi) - math.log(x_lo))

    def py(y: float) -> float:
        frac = (math.log(y) - math.log(y_lo)) / (math.log(y_hi) - math.log(y_lo))
        return TOP + plot_h * (1 - frac)

    parts = [f'<svg class="plot" viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" '
             f'height="{HEIGHT}" role="img" aria-label="{escape(y_label)} vs {escape(x_label)}">',
             f'<rect x="{LEFT}" y="{TOP}" width="{plot_w}" height="{plot_h}" class="frame"/>']
    xs = sorted({p[0] for p in pts})
    for x in xs:
        parts.append(f'<text x="{px(x):.1f}" y="{HEIGHT - BOTTOM + 15}" class="tick" '
                     f'text-anchor="middle">{_label(x)}</text>')
    for y in _decades(y_lo, y_hi):
        parts.append(f'<line x1="{LEFT}" x2="{LEFT + plot_w}" y1="{py(y):.1f}" y2="{py(y):.1f}" '
                     f'class="grid"/><text x="{LEFT - 6}" y="{py(y) + 4:.1f}" class="tick" '
                     f'text-anchor="end">{y:.3g}</text>')
    parts.append(f'<text x="{LEFT + plot_w / 2}" y="{HEIGHT - 8}" class="axis" '
                 f'text-anchor="middle">{escape(x_label)} (log)</text>')
    parts.append(f'<text x="14" y="{TOP + plot_h / 2}" class="axis" text-anchor="middle" '
                 f'transform="rotate(-90 14 {TOP + plot_h / 2})">{escape(y_label)} (log)</text>')
    for i, (name, s) in enumerate(sorted(series.items())):
        color = PALETTE[i % len(PALETTE)]
        line = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in sorted(s.items()) if y > 0)
        dash = ' stroke-dasharray="5 3"' if i >= len(PALETTE) else ""
        parts.append(f'<polyline points="{line}" fill="none" stroke="{color}" '
                     f'stroke-width="1.8"{dash}><title>{escape(name)}</title></polyline>')
        ly = TOP + 14 * i + 8
        parts.append(f'<line x1="{WIDTH - RIGHT + 10}" x2="{WIDTH - RIGHT + 28}" y1="{ly}" '
                     f'y2="{ly}" stroke="{color}" stroke-width="2"{dash}/>'
                     f'<text x="{WIDTH - RIGHT + 32}" y="{ly + 4}" class="legend">'
                     f'{escape(name)}</text>')
    parts.append("</svg>")
    return Markup("".join(parts))
