"""Small inline-SVG charts for the HTML report and the notebooks: no JavaScript library, no fonts,
no network. Every function returns a ``<figure>`` string whose marks carry ``class="mark"`` (the
report's browser test checks they are drawn); text uses the page's CJK font stack.

In a notebook: ``IPython.display.HTML(charts.columns(...))``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from html import escape

NEG, NEU, POS = "#d64545", "#a7b1bd", "#2f9e6f"
ACCENT, MUTED, GRID = "#2f6fde", "#6b7785", "#e6e9ee"
PALETTE = ("#2f6fde", "#d64545", "#2f9e6f", "#e39b2d", "#7b5cc4", "#1c9bb0", "#c2578f", "#6b7785")

Fmt = Callable[[float], str]


def _num(v: float) -> str:
    return f"{v:.1f}".rstrip("0").rstrip(".")


def _nice_max(v: float) -> float:
    """A round axis maximum at or above ``v``."""
    if v <= 0:
        return 1.0
    mag = 10 ** (len(str(int(v))) - 1) if v >= 1 else 0.1
    for step in (1, 2, 2.5, 5, 10):
        if step * mag >= v:
            return step * mag
    return 10 * mag


def _figure(name: str, title: str, svg: str, legend: Sequence[tuple[str, str]] = (), note: str = "") -> str:
    items = "".join(f'<span class="key"><i style="background:{c}"></i>{escape(n)}</span>' for n, c in legend)
    caption = f'<figcaption><b>{escape(title)}</b>{items}{f"<small>{escape(note)}</small>" if note else ""}' \
              "</figcaption>"
    return f'<figure class="chart" data-chart="{escape(name)}">{caption}{svg}</figure>'


def _svg(width: int, height: int, body: str, label: str) -> str:
    return (f'<svg class="chart-svg" viewBox="0 0 {width} {height}" width="100%" role="img" '
            f'aria-label="{escape(label)}" xmlns="http://www.w3.org/2000/svg">{body}</svg>')


def _y_axis(x0: int, x1: int, y0: int, y1: int, top: float, fmt: Fmt, ticks: int = 4) -> str:
    out = []
    for i in range(ticks + 1):
        v = top * i / ticks
        y = y1 - (y1 - y0) * i / ticks
        out.append(f'<line x1="{x0}" x2="{x1}" y1="{y:.1f}" y2="{y:.1f}" stroke="{GRID}"/>'
                   f'<text x="{x0 - 6}" y="{y + 4:.1f}" text-anchor="end" class="tick">{escape(fmt(v))}</text>')
    return "".join(out)


def columns(name: str, title: str, categories: Sequence[str], series: Sequence[tuple[str, Sequence[float], str]],
            line: tuple[str, Sequence[float | None], str] | None = None, line_fmt: Fmt = lambda v: f"{v:.0%}",
            fmt: Fmt = _num, note: str = "", width: int = 760, height: int = 300) -> str:
    """Stacked columns per category (``series``: name, values, colour), optionally with a line on a
    0…max right-hand axis (e.g. a rate)."""
    left, right, top, bottom = 48, 56 if line else 16, 14, 44
    x0, x1, y0, y1 = left, width - right, top, height - bottom
    totals = [sum(s[1][i] for s in series) for i in range(len(categories))]
    ymax = _nice_max(max(totals, default=0))
    n = max(len(categories), 1)
    slot = (x1 - x0) / n
    bar = min(slot * 0.64, 56)
    parts = [_y_axis(x0, x1, y0, y1, ymax, fmt)]
    for i, cat in enumerate(categories):
        cx = x0 + slot * (i + 0.5)
        base = y1
        for s_name, values, colour in series:
            v = values[i]
            h = (y1 - y0) * v / ymax
            if h > 0:
                parts.append(f'<rect class="mark" x="{cx - bar / 2:.1f}" y="{base - h:.1f}" width="{bar:.1f}" '
                             f'height="{h:.1f}" fill="{colour}"><title>{escape(cat)} {escape(s_name)}: '
                             f'{escape(fmt(v))}</title></rect>')
            base -= h
        if n <= 12 or i % 2 == 0:
            parts.append(f'<text x="{cx:.1f}" y="{y1 + 18}" text-anchor="middle" class="tick">{escape(cat)}</text>')
    legend = [(s[0], s[2]) for s in series]
    if line:
        l_name, l_values, l_colour = line
        lmax = max((v for v in l_values if v is not None), default=0) or 1.0
        lmax = _nice_max(lmax) if lmax > 1 else min(1.0, _nice_max(lmax * 100) / 100)
        pts = [(x0 + slot * (i + 0.5), y1 - (y1 - y0) * v / lmax) for i, v in enumerate(l_values) if v is not None]
        if pts:
            d = "M" + " L".join(f"{x:.1f},{y:.1f}" for x, y in pts)
            parts.append(f'<path class="mark" d="{d}" fill="none" stroke="{l_colour}" stroke-width="2.5"/>')
            parts.extend(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3.5" fill="{l_colour}"><title>{escape(l_name)}: '
                         f'{escape(line_fmt(v))}</title></circle>'
                         for (x, y), v in zip(pts, [v for v in l_values if v is not None], strict=True))
        for i in range(5):
            y = y1 - (y1 - y0) * i / 4
            parts.append(f'<text x="{x1 + 6}" y="{y + 4:.1f}" class="tick" fill="{l_colour}">'
                         f'{escape(line_fmt(lmax * i / 4))}</text>')
        legend.append((l_name, l_colour))
    return _figure(name, title, _svg(width, height, "".join(parts), title), legend, note)


def lines(name: str, title: str, categories: Sequence[str], series: Sequence[tuple[str, Sequence[float | None]]],
          fmt: Fmt = _num, y_min: float | None = None, y_max: float | None = None, note: str = "",
          width: int = 760, height: int = 280) -> str:
    """One line per series over the categories (gaps where a value is ``None``)."""
    left, right, top, bottom = 48, 16, 14, 44
    x0, x1, y0, y1 = left, width - right, top, height - bottom
    values = [v for _, vs in series for v in vs if v is not None]
    lo = y_min if y_min is not None else min(0.0, min(values, default=0.0))
    hi = y_max if y_max is not None else _nice_max(max(values, default=1.0))
    span = (hi - lo) or 1.0
    n = max(len(categories), 1)
    slot = (x1 - x0) / n
    parts = []
    for i in range(5):
        v = lo + span * i / 4
        y = y1 - (y1 - y0) * i / 4
        parts.append(f'<line x1="{x0}" x2="{x1}" y1="{y:.1f}" y2="{y:.1f}" stroke="{GRID}"/>'
                     f'<text x="{x0 - 6}" y="{y + 4:.1f}" text-anchor="end" class="tick">{escape(fmt(v))}</text>')
    for i, cat in enumerate(categories):
        if n <= 12 or i % 2 == 0:
            parts.append(f'<text x="{x0 + slot * (i + 0.5):.1f}" y="{y1 + 18}" text-anchor="middle" '
                         f'class="tick">{escape(cat)}</text>')
    legend = []
    for k, (s_name, vs) in enumerate(series):
        colour = PALETTE[k % len(PALETTE)]
        legend.append((s_name, colour))
        pts = [(x0 + slot * (i + 0.5), y1 - (y1 - y0) * (v - lo) / span, v) for i, v in enumerate(vs)
               if v is not None]
        if not pts:
            continue
        d = "M" + " L".join(f"{x:.1f},{y:.1f}" for x, y, _ in pts)
        parts.append(f'<path class="mark" d="{d}" fill="none" stroke="{colour}" stroke-width="2.2"/>')
        parts.extend(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{colour}"><title>{escape(s_name)}: '
                     f'{escape(fmt(v))}</title></circle>' for x, y, v in pts)
    return _figure(name, title, _svg(width, height, "".join(parts), title), legend, note)


def hbars(name: str, title: str, labels: Sequence[str], values: Sequence[float], fmt: Fmt = _num,
          colours: Sequence[str] | str = ACCENT, annotations: Sequence[str] | None = None, note: str = "",
          width: int = 760, label_width: int = 190) -> str:
    """Horizontal bars, one per label; negative values grow left from a zero line (diverging)."""
    row, top = 26, 8
    height = top * 2 + row * max(len(labels), 1)
    x0, x1 = label_width, width - 120
    lo = min(0.0, min(values, default=0.0))
    hi = max(0.0, max(values, default=0.0))
    span = (hi - lo) or 1.0
    zero = x0 + (x1 - x0) * (-lo) / span
    parts = [f'<line x1="{zero:.1f}" x2="{zero:.1f}" y1="{top}" y2="{height - top}" stroke="{MUTED}"/>']
    for i, (label, v) in enumerate(zip(labels, values, strict=True)):
        y = top + row * i
        colour = colours if isinstance(colours, str) else colours[i % len(colours)]
        w = (x1 - x0) * abs(v) / span
        x = zero if v >= 0 else zero - w
        text = fmt(v) + (f"  {annotations[i]}" if annotations else "")
        parts.append(f'<text x="{x0 - 8}" y="{y + row / 2 + 4:.1f}" text-anchor="end" class="label">'
                     f'{escape(label)}</text>'
                     f'<rect class="mark" x="{x:.1f}" y="{y + 4}" width="{max(w, 1.5):.1f}" height="{row - 8}" '
                     f'rx="3" fill="{colour}"><title>{escape(label)}: {escape(fmt(v))}</title></rect>'
                     f'<text x="{(x + w if v >= 0 else zero) + 6:.1f}" y="{y + row / 2 + 4:.1f}" '
                     f'class="tick">{escape(text)}</text>')
    return _figure(name, title, _svg(width, height, "".join(parts), title), note=note)


def spark_bar(value: float, top: float, colour: str = ACCENT, width: int = 90) -> str:
    """A tiny inline bar for a table cell (value relative to ``top``)."""
    w = 0 if top <= 0 else max(1.5, width * value / top)
    return (f'<svg class="spark" viewBox="0 0 {width} 10" width="{width}" height="10" aria-hidden="true">'
            f'<rect class="mark" x="0" y="1" width="{w:.1f}" height="8" rx="2" fill="{colour}"/></svg>')
