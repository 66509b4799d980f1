"""The dashboard's two charts of its own, inline SVG drawn on the server like `shared.web.charts`: the retention
heat map (sign-up month by months after, the share active written in each cell) and the paths (the most common
next steps after an event, each path a row of steps with a bar of its share).

Both read without colour: every cell and bar has its number written on it and says it again on hover (a
`<title>`), the heat map has a legend of its shades, and the page puts the same numbers in a table beside.
A suppressed cell (None) is hatched grey with an en dash.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from markupsafe import Markup, escape

from shared.web.charts import _empty, _f, _markup, _open

Shown = Callable[[float | None], str]
CELL_W, CELL_H = 34, 20  # one heat-map cell
LABEL_W = 108  # the cohort column (month and size)
WIDE = 720  # the paths chart spans the page


@dataclass(frozen=True)
class HeatCell:
    row: str  # the cohort
    column: int  # months after signing up
    value: float | None  # the share active, 0-1; None: suppressed
    hover: str  # what a pointer resting on the cell reads


def shade(share: float) -> str:
    """The cell's fill: from pale to the accent blue as the share grows (white text from 55% on)."""
    share = min(max(share, 0.0), 1.0)
    light, dark = (236, 243, 251), (11, 92, 173)
    r, g, b = (round(lo + (hi - lo) * share) for lo, hi in zip(light, dark, strict=True))
    return f"#{r:02x}{g:02x}{b:02x}"


def heat_map(
    cells: Sequence[HeatCell],
    rows: Sequence[tuple[str, str]],
    columns: int,
    *,
    chart_id: str,
    title: str,
    column_title: str,
    legend: tuple[str, str, str],
    shown: Shown,
    empty: str,
) -> Markup:
    """A grid: a row per (key, label) of `rows`, a column per month 0..`columns`-1, each cell shaded by its
    share with the number (as `shown` writes it, without %) written in it. `legend`: the words for 0%, 100% and
    a suppressed cell."""
    if not cells or not rows:
        return _empty(chart_id, title, empty)
    top = 30
    width = LABEL_W + columns * CELL_W + 4
    height = top + len(rows) * CELL_H + 40
    index = {key: i for i, (key, _) in enumerate(rows)}
    parts = [
        '<defs><pattern id="hatch" width="6" height="6" patternUnits="userSpaceOnUse" patternTransform="rotate(45)">'
        '<rect width="6" height="6" fill="#f3f5f8"/><line x1="0" y1="0" x2="0" y2="6" stroke="#b9bec7" '
        'stroke-width="2"/></pattern></defs>',
        f'<text class="chart-tick" x="{LABEL_W}" y="10">{escape(column_title)}</text>',
    ]
    for column in range(columns):
        x = LABEL_W + column * CELL_W + CELL_W / 2
        parts.append(f'<text class="chart-tick" x="{_f(x)}" y="{top - 6}" text-anchor="middle">{column}</text>')
    for key, label in rows:
        y = top + index[key] * CELL_H
        parts.append(f'<text class="chart-label" x="0" y="{y + 14}">{escape(label)}</text>')
    for cell in cells:
        if cell.row not in index or not 0 <= cell.column < columns:
            continue
        x, y = LABEL_W + cell.column * CELL_W, top + index[cell.row] * CELL_H
        fill = "url(#hatch)" if cell.value is None else shade(cell.value)
        ink = "heat-dark" if cell.value is not None and cell.value >= 0.55 else "heat-light"
        number = shown(None if cell.value is None else cell.value * 100)
        parts.append(
            f'<g class="heat-cell"><title>{escape(cell.hover)}</title>'
            f'<rect x="{x}" y="{y}" width="{CELL_W - 2}" height="{CELL_H - 2}" fill="{fill}"/>'
            f'<text class="heat-value {ink}" x="{_f(x + CELL_W / 2 - 1)}" y="{y + 13}" text-anchor="middle">'
            f"{escape(number)}</text></g>"
        )
    # The legend: the shades from 0 to 100%, and what a hatched cell means.
    ly = top + len(rows) * CELL_H + 14
    for k in range(11):
        parts.append(f'<rect x="{LABEL_W + k * 14}" y="{ly}" width="14" height="10" fill="{shade(k / 10)}"/>')
    zero, full, hidden = legend
    parts.append(f'<text class="chart-tick" x="{LABEL_W - 4}" y="{ly + 9}" text-anchor="end">{escape(zero)}</text>')
    parts.append(f'<text class="chart-tick" x="{LABEL_W + 158}" y="{ly + 9}">{escape(full)}</text>')
    hx = LABEL_W + 210
    parts.append(f'<rect x="{hx}" y="{ly}" width="14" height="10" fill="url(#hatch)"/>')
    parts.append(f'<text class="chart-tick" x="{hx + 18}" y="{ly + 9}">{escape(hidden)}</text>')
    description = "; ".join(cell.hover for cell in cells)
    return _markup(_open(chart_id, height, title, description, width) + "".join(parts) + "</svg>")


@dataclass(frozen=True)
class PathRow:
    steps: Sequence[str]  # the next steps, in order, as people read them
    share: float | None  # of all the occurrences counted; None: suppressed
    label: str  # the number written at the bar, e.g. "812 (41,2%)"
    nothing: Sequence[bool] = ()  # per step: nothing came in time (drawn as a dashed, empty box)


def path_chart(
    paths: Sequence[PathRow], start: str, *, chart_id: str, title: str, empty: str, width: int = WIDE
) -> Markup:
    """Each path a row: `start` → step → step as labelled boxes, then a bar as long as its share (of the
    largest) with its number; hover reads the whole path and its number."""
    if not paths:
        return _empty(chart_id, title, empty)
    depth = max(len(p.steps) for p in paths)
    box_w = min(150.0, (width * 0.62) / (depth + 1))
    bar_x = (depth + 1) * (box_w + 12) + 4
    bar_w = width - bar_x - 110
    top = max((p.share or 0 for p in paths), default=0) or 1
    row_h = 27
    parts = []
    for i, path in enumerate(paths):
        y = i * row_h
        names = [start, *path.steps]
        hover = " → ".join(names) + f": {path.label}"
        parts.append(f'<g class="path-row"><title>{escape(hover)}</title>')
        for k, name in enumerate(names):
            x = k * (box_w + 12)
            missing = 0 < k <= len(path.nothing) and path.nothing[k - 1]
            kind = "path-start" if k == 0 else ("path-none" if missing else "path-step")
            parts.append(f'<rect class="{kind}" x="{_f(x)}" y="{y + 2}" width="{_f(box_w)}" height="21" rx="3"/>')
            parts.append(f'<text class="path-text" x="{_f(x + 5)}" y="{y + 17}">{escape(_fit(name, box_w))}</text>')
            if k:
                parts.append(f'<text class="chart-tick" x="{_f(x - 10)}" y="{y + 17}">→</text>')
        if path.share is not None:
            length = max(path.share / top * bar_w, 1.5 if path.share > 0 else 0)
            parts.append(
                f'<rect class="chart-bar" x="{_f(bar_x)}" y="{y + 6}" width="{_f(length)}" height="13" rx="2"/>'
            )
            at = bar_x + length + 5
        else:
            at = bar_x
        parts.append(f'<text class="chart-value" x="{_f(at)}" y="{y + 17}">{escape(path.label)}</text></g>')
    description = "; ".join(" → ".join([start, *p.steps]) + f": {p.label}" for p in paths)
    return _markup(_open(chart_id, len(paths) * row_h + 2, title, description, width) + "".join(parts) + "</svg>")


def _fit(text: str, width: float) -> str:
    """Shortened with an ellipsis to fit a box (about 6.2 units a character at the chart's 11 px); the hover
    and the table beside give the whole name."""
    room = int((width - 8) / 6.2)
    return text if len(text) <= room else text[: max(room - 1, 1)] + "…"


__all__ = ["HeatCell", "Markup", "PathRow", "heat_map", "path_chart", "shade"]
