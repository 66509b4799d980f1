"""Charts as inline SVG, drawn on the server: nothing to fetch, nothing to run in the browser.

Each chart is an `<svg role="img">` with a title and a description; every bar or point carries its number as
text, and line series differ by dash pattern and marker shape as well as by colour, so that the chart reads
without colour. A value of None (a suppressed cell) draws no bar and shows an en dash. The pages also show the
same numbers in a table next to each chart. Sizes are in viewBox units: a chart scales to its column, and at
phone width its text stays about the size of the page's.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from markupsafe import Markup, escape

from shared.web.i18n import NO_NUMBER

WIDTH = 360
ROW = 34  # height of one labelled bar
Shown = Callable[[float | None], str]
DASHES = ("", "6 3", "2 3", "8 3 2 3", "1 2", "10 4")
MARKERS = ("circle", "square", "triangle", "diamond", "cross", "bar")


@dataclass(frozen=True)
class Bar:
    label: str
    value: float | None
    note: str = ""  # shown after the number, e.g. "of 1.234"


@dataclass(frozen=True)
class Series:
    name: str
    values: Sequence[float | None]


def _markup(svg: str) -> Markup:
    # Every text put into the SVG went through escape(); numbers and attributes are made here.
    return Markup(svg)  # noqa: S704


def _f(number: float) -> str:
    return f"{number:.1f}".rstrip("0").rstrip(".")


def _open(chart_id: str, height: float, title: str, description: str, width: int = WIDTH) -> str:
    wide = " wide" if width > WIDTH else ""  # a wider drawing, for a chart across the page (CSS: svg.chart.wide)
    return (
        f'<svg class="chart{wide}" viewBox="0 0 {width} {_f(height)}" role="img" '
        f'aria-labelledby="{chart_id}-title {chart_id}-desc" xmlns="http://www.w3.org/2000/svg">'
        f'<title id="{chart_id}-title">{escape(title)}</title><desc id="{chart_id}-desc">{escape(description)}</desc>'
    )


def _empty(chart_id: str, title: str, message: str) -> Markup:
    return _markup(
        _open(chart_id, 40, title, message) + f'<text class="chart-empty" x="0" y="24">{escape(message)}</text></svg>'
    )


def bar_chart(
    bars: Sequence[Bar], *, chart_id: str, title: str, shown: Shown, empty: str, maximum: float | None = None
) -> Markup:
    """Horizontal bars, one row each: the label above, the bar with its number at its end."""
    if not bars:
        return _empty(chart_id, title, empty)
    top = maximum if maximum is not None else max((b.value or 0 for b in bars), default=0)
    scale = (WIDTH - 90) / top if top > 0 else 0
    rows = []
    for i, bar in enumerate(bars):
        y = i * ROW
        number = shown(bar.value)
        text = f"{number} {bar.note}".strip()
        rows.append(f'<text class="chart-label" x="0" y="{y + 12}">{escape(bar.label)}</text>')
        if bar.value is None:
            rows.append(f'<text class="chart-value" x="0" y="{y + 28}">{escape(text)}</text>')
            continue
        width = max(bar.value * scale, 1.5 if bar.value > 0 else 0)
        rows.append(f'<rect class="chart-bar" x="0" y="{y + 17}" width="{_f(width)}" height="13" rx="2"/>')
        rows.append(f'<text class="chart-value" x="{_f(width + 5)}" y="{y + 28}">{escape(text)}</text>')
    description = "; ".join(f"{b.label}: {shown(b.value)}" for b in bars)
    return _markup(_open(chart_id, len(bars) * ROW + 4, title, description) + "".join(rows) + "</svg>")


def funnel_chart(steps: Sequence[Bar], *, chart_id: str, title: str, shown: Shown, empty: str) -> Markup:
    """A funnel: each step a bar centred on the one before, as wide as its count, with the count and the note
    (usually the share of the first step) written out."""
    if not steps:
        return _empty(chart_id, title, empty)
    top = max((s.value or 0 for s in steps), default=0)
    usable = WIDTH - 20
    rows = []
    for i, step in enumerate(steps):
        y = i * (ROW + 6)
        text = f"{shown(step.value)} {step.note}".strip()
        rows.append(f'<text class="chart-label" x="0" y="{y + 12}">{i + 1}. {escape(step.label)}</text>')
        if step.value is not None and top > 0:
            width = max(step.value / top * usable, 1.5 if step.value > 0 else 0)
            x = (WIDTH - width) / 2
            rows.append(
                f'<rect class="chart-bar funnel-step" x="{_f(x)}" y="{y + 17}" width="{_f(width)}" height="18" rx="2"/>'
            )
        rows.append(f'<text class="chart-value funnel-value" x="{WIDTH / 2}" y="{y + 30}" text-anchor="middle">'
                    f"{escape(text)}</text>")  # fmt: skip
    description = "; ".join(f"{s.label}: {shown(s.value)} {s.note}".strip() for s in steps)
    return _markup(_open(chart_id, len(steps) * (ROW + 6) + 4, title, description) + "".join(rows) + "</svg>")


def _marker(kind: str, x: float, y: float, hover: str = "") -> str:
    """A point's marker; `hover`: the text a pointer resting on it shows (its series, period and number)."""
    if kind == "circle":
        tag, attrs = "circle", f'cx="{_f(x)}" cy="{_f(y)}" r="3.2"'
    elif kind in ("square", "bar"):
        w, h = (6, 6) if kind == "square" else (2, 8)
        tag, attrs = "rect", f'x="{_f(x - w / 2)}" y="{_f(y - h / 2)}" width="{w}" height="{h}"'
    elif kind == "triangle":
        tag, attrs = "path", f'd="M{_f(x)} {_f(y - 4)} L{_f(x + 4)} {_f(y + 3)} L{_f(x - 4)} {_f(y + 3)} Z"'
    elif kind == "diamond":
        tag, attrs = (
            "path",
            f'd="M{_f(x)} {_f(y - 4)} L{_f(x + 4)} {_f(y)} L{_f(x)} {_f(y + 4)} L{_f(x - 4)} {_f(y)} Z"',
        )
    else:
        cross = f"M{_f(x - 3)} {_f(y - 3)} L{_f(x + 3)} {_f(y + 3)} M{_f(x - 3)} {_f(y + 3)} L{_f(x + 3)} {_f(y - 3)}"
        tag, attrs = "path", f'class="chart-cross" d="{cross}"'
    return f"<{tag} {attrs}><title>{escape(hover)}</title></{tag}>" if hover else f"<{tag} {attrs}/>"


def line_chart(
    series: Sequence[Series],
    x_labels: Sequence[str],
    *,
    chart_id: str,
    title: str,
    shown: Shown,
    empty: str,
    width: int = WIDTH,
) -> Markup:
    """Lines over time, one per series, with a legend (in columns on a wide chart); suppressed points (None)
    break the line. Each point tells its series, period and number on hover."""
    if not series or not x_labels:
        return _empty(chart_id, title, empty)
    columns = max(1, width // 300)  # legend columns: room for a rule's name
    legend_rows = -(-len(series) // columns)
    left, top_pad, plot_h = 34.0, 10.0, 150.0
    plot_w = width - left - 8
    legend_y = top_pad + plot_h + 30
    height = legend_y + legend_rows * 18
    top = max((v for s in series for v in s.values if v is not None), default=0) or 1
    step = plot_w / max(len(x_labels) - 1, 1)

    def xy(i: int, v: float) -> tuple[float, float]:
        return left + i * step, top_pad + plot_h - v / top * plot_h

    parts = [
        f'<line class="chart-axis" x1="{left}" y1="{top_pad + plot_h}" x2="{width - 8}" y2="{top_pad + plot_h}"/>',
        f'<line class="chart-axis" x1="{left}" y1="{top_pad}" x2="{left}" y2="{top_pad + plot_h}"/>',
        f'<text class="chart-tick" x="{left - 4}" y="{top_pad + 4}" text-anchor="end">{escape(shown(top))}</text>',
        f'<text class="chart-tick" x="{left - 4}" y="{top_pad + plot_h}" text-anchor="end">{escape(shown(0))}</text>',
    ]
    last = len(x_labels) - 1
    gaps = max(1, min(last, width // 120))  # a label about every 120 units
    ticks = sorted({round(k * last / gaps) for k in range(gaps + 1)})
    for i in ticks:
        anchor = "start" if i == 0 else ("end" if i == last else "middle")
        parts.append(
            f'<text class="chart-tick" x="{_f(left + i * step)}" y="{top_pad + plot_h + 16}" '
            f'text-anchor="{anchor}">{escape(x_labels[i])}</text>'
        )
    for n, one in enumerate(series):
        style = f"series-{n % len(DASHES)}"
        dash = DASHES[n % len(DASHES)]
        marker = MARKERS[n % len(MARKERS)]
        segments: list[list[tuple[int, float, float]]] = [[]]
        for i, value in enumerate(one.values):
            if value is None:
                segments.append([])
            else:
                segments[-1].append((i, *xy(i, value)))
        group = [f'<g class="chart-series {style}">']
        for segment in segments:
            if len(segment) > 1:
                points = " ".join(f"{_f(x)},{_f(y)}" for _, x, y in segment)
                dash_attr = f' stroke-dasharray="{dash}"' if dash else ""
                group.append(f'<polyline class="chart-line" fill="none" points="{points}"{dash_attr}/>')
            group += [
                _marker(marker, x, y, f"{one.name}, {x_labels[i]}: {shown(one.values[i])}") for i, x, y in segment
            ]
        lx, ly = (n % columns) * (width / columns), legend_y + (n // columns) * 18
        dash_attr = f' stroke-dasharray="{dash}"' if dash else ""
        group.append(
            f'<line class="chart-line" x1="{_f(lx)}" y1="{ly - 4}" x2="{_f(lx + 24)}" y2="{ly - 4}"{dash_attr}/>'
        )
        group.append(_marker(marker, lx + 12, ly - 4))
        group.append(f'<text class="chart-legend" x="{_f(lx + 30)}" y="{ly}">{escape(one.name)}</text>')
        group.append("</g>")
        parts += group
    description = "; ".join(
        f"{s.name}: " + ", ".join(f"{label} {shown(v)}" for label, v in zip(x_labels, s.values, strict=False))
        for s in series
    )
    return _markup(_open(chart_id, height, title, description, width) + "".join(parts) + "</svg>")


__all__ = ["NO_NUMBER", "Bar", "Series", "bar_chart", "funnel_chart", "line_chart"]
