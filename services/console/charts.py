"""Small server-side SVG charts: bars (stacked by series), lines, horizontal bars and
intervals. Each has a <title>, a <desc>, axis labels and a data table as its text
alternative. Every label is escaped here; colours come from CSS classes (s0..s5), so
no inline style is needed and the Content-Security-Policy stays strict."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from itertools import count

from markupsafe import Markup, escape

_ids = count(1)
W, H = 720, 240
LEFT, RIGHT, TOP, BOTTOM = 48, 12, 16, 40


def _nice_max(v: float) -> float:
    if v <= 4:
        return 4.0  # counts: whole-number ticks 0..4
    mag: float = 10 ** math.floor(math.log10(v))
    for step in (1, 2, 2.5, 5, 10):
        if v <= step * mag:
            return step * mag
    return 10 * mag


def _fmt(v: float) -> str:
    return f"{v:,.0f}" if float(v).is_integer() else f"{v:,.2f}"


def _count(n: int, x_label: str) -> str:
    """``n`` of the x axis's unit as a sentence reads it: "30 days (UTC)", "1 day (UTC)",
    "4 CSMs" (the label's first word takes the plural; its case is kept, but for a leading
    capital: "Day" reads "days")."""
    first, space, rest = x_label.partition(" ")
    if first[:1].isupper() and not first.isupper():
        first = first.lower()
    return f"{_fmt(n)} {first}{'' if n == 1 else 's'}{space}{rest}"


def _table(title: str, x_label: str, labels: Sequence[str], series: Mapping[str, Sequence[float]]) -> str:
    head = "".join(f'<th scope="col">{escape(n)}</th>' for n in series)
    rows = "".join(
        f'<tr><th scope="row">{escape(lab)}</th>' + "".join(f"<td>{_fmt(vals[i])}</td>" for vals in series.values()) + "</tr>"
        for i, lab in enumerate(labels)
    )
    return (
        f'<details class="chart-data"><summary>{escape(title)}: data table</summary><div class="scroll"><table>'
        f'<thead><tr><th scope="col">{escape(x_label)}</th>{head}</tr></thead><tbody>{rows}</tbody></table></div></details>'
    )


def _frame(title: str, desc: str, body: str, x_label: str, y_label: str, ymax: float, w: int = W, h: int = H) -> str:
    n = next(_ids)
    ph = h - TOP - BOTTOM
    ticks = []
    for i in range(5):
        v = ymax * i / 4
        y = TOP + ph - ph * i / 4
        ticks.append(
            f'<line class="grid" x1="{LEFT}" x2="{w - RIGHT}" y1="{y:.1f}" y2="{y:.1f}"/>'
            f'<text class="tick" x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">{_fmt(v)}</text>'
        )
    return (
        f'<svg class="chart" viewBox="0 0 {w} {h}" role="img" aria-labelledby="ct{n} cd{n}" '
        f'xmlns="http://www.w3.org/2000/svg"><title id="ct{n}">{escape(title)}</title><desc id="cd{n}">{escape(desc)}</desc>'
        + "".join(ticks)
        + body
        + f'<line class="axis" x1="{LEFT}" x2="{w - RIGHT}" y1="{TOP + ph}" y2="{TOP + ph}"/>'
        f'<text class="label" x="{(LEFT + w - RIGHT) / 2:.0f}" y="{h - 4}" text-anchor="middle">{escape(x_label)}</text>'
        f'<text class="label" transform="translate(12 {TOP + ph / 2:.0f}) rotate(-90)" text-anchor="middle">{escape(y_label)}</text>'
        "</svg>"
    )


def _x_ticks(labels: Sequence[str], x_of: Callable[[int], float], h: int = H) -> str:
    if not labels:
        return ""
    step = max(1, math.ceil(len(labels) / 8))
    out = []
    for i in range(0, len(labels), step):
        out.append(f'<text class="tick" x="{x_of(i):.1f}" y="{h - BOTTOM + 14}" text-anchor="middle">{escape(labels[i])}</text>')
    return "".join(out)


def _legend(names: Sequence[str]) -> str:
    if len(names) < 2:
        return ""
    items = "".join(f'<li><span class="swatch s{i % 6}"></span>{escape(n)}</li>' for i, n in enumerate(names))
    return f'<ul class="legend">{items}</ul>'


def bars(
    title: str, labels: Sequence[str], series: Mapping[str, Sequence[float]], *, x_label: str, y_label: str, desc: str | None = None
) -> Markup:
    """Vertical bars per label, stacked by series."""
    names = list(series)
    totals = [sum(series[s][i] for s in names) for i in range(len(labels))]
    ymax = _nice_max(max(totals, default=0))
    pw, ph = W - LEFT - RIGHT, H - TOP - BOTTOM
    slot = pw / max(1, len(labels))
    bw = max(1.0, slot * 0.75)
    body = []
    for i, lab in enumerate(labels):
        y: float = TOP + ph
        for k, name in enumerate(names):
            v = series[name][i]
            if v <= 0:
                continue
            hgt = ph * v / ymax
            y -= hgt
            body.append(
                f'<rect class="s{k % 6}" x="{LEFT + i * slot + (slot - bw) / 2:.1f}" y="{y:.1f}" width="{bw:.1f}" '
                f'height="{hgt:.1f}"><title>{escape(lab)} {escape(name)}: {_fmt(v)}</title></rect>'
            )
    body.append(_x_ticks(labels, lambda i: LEFT + i * slot + slot / 2))
    desc = desc or f"{title}: {_fmt(sum(totals))} in total over {_count(len(labels), x_label)}"
    return Markup(_frame(title, desc, "".join(body), x_label, y_label, ymax) + _legend(names) + _table(title, x_label, labels, series))


def lines(
    title: str, labels: Sequence[str], series: dict[str, Sequence[float]], *, x_label: str, y_label: str, desc: str | None = None
) -> Markup:
    names = list(series)
    ymax = _nice_max(max((max(v, default=0) for v in series.values()), default=0))
    pw, ph = W - LEFT - RIGHT, H - TOP - BOTTOM
    n = max(1, len(labels) - 1)

    def x_of(i: int) -> float:
        return LEFT + pw * i / n

    body = []
    for k, name in enumerate(names):
        pts = " ".join(f"{x_of(i):.1f},{TOP + ph - ph * v / ymax:.1f}" for i, v in enumerate(series[name]))
        body.append(f'<polyline class="line s{k % 6}" fill="none" points="{pts}"><title>{escape(name)}</title></polyline>')
    body.append(_x_ticks(labels, x_of))
    desc = desc or f"{title}: " + "; ".join(f"{n} from {_fmt(series[n][0])} to {_fmt(series[n][-1])}" for n in names if series[n])
    return Markup(_frame(title, desc, "".join(body), x_label, y_label, ymax) + _legend(names) + _table(title, x_label, labels, series))


def hbars(title: str, rows: Sequence[tuple[str, float]], *, x_label: str, desc: str | None = None) -> Markup:
    """Horizontal bars, one per row (a funnel)."""
    n = next(_ids)
    row_h, label_w, w = 28, 220, W
    h = TOP + row_h * len(rows) + 28
    vmax = _nice_max(max((v for _, v in rows), default=0))
    pw = w - label_w - RIGHT - 40
    body = []
    for i, (lab, v) in enumerate(rows):
        y = TOP + i * row_h
        bw = pw * v / vmax
        body.append(
            f'<text class="tick" x="{label_w - 8}" y="{y + 17}" text-anchor="end">{escape(lab)}</text>'
            f'<rect class="s{0 if i == 0 else 1}" x="{label_w}" y="{y + 4}" width="{bw:.1f}" height="{row_h - 8}"/>'
            f'<text class="value" x="{label_w + bw + 6:.1f}" y="{y + 17}">{_fmt(v)}</text>'
        )
    desc = desc or f"{title}: " + "; ".join(f"{lab} {_fmt(v)}" for lab, v in rows)
    svg = (
        f'<svg class="chart" viewBox="0 0 {w} {h}" role="img" aria-labelledby="ct{n} cd{n}" '
        f'xmlns="http://www.w3.org/2000/svg"><title id="ct{n}">{escape(title)}</title><desc id="cd{n}">{escape(desc)}</desc>'
        + "".join(body)
        + f'<text class="label" x="{label_w + pw / 2:.0f}" y="{h - 6}" text-anchor="middle">{escape(x_label)}</text></svg>'
    )
    return Markup(svg + _table(title, "step", [r[0] for r in rows], {x_label: [r[1] for r in rows]}))


def intervals(
    title: str,
    rows: Sequence[tuple[str, float | None, float | None, float | None]],
    *,
    x_label: str,
    lo: float,
    hi: float,
    zero: bool = True,
    desc: str | None = None,
    percent: bool = True,
) -> Markup:
    """Point estimates with their intervals on one horizontal scale: (label, point, low, high)."""
    n = next(_ids)
    row_h, label_w, w = 36, 180, W
    h = TOP + row_h * len(rows) + 40
    pw = w - label_w - RIGHT - 20

    def x_of(v: float) -> float:
        return label_w + pw * (v - lo) / (hi - lo or 1)

    def f(v: float | None) -> str:
        return "—" if v is None else (f"{v * 100:+.1f}%" if percent and lo < 0 else f"{v * 100:.1f}%" if percent else _fmt(v))

    body = []
    for i in range(5):
        v = lo + (hi - lo) * i / 4
        body.append(
            f'<line class="grid" x1="{x_of(v):.1f}" x2="{x_of(v):.1f}" y1="{TOP}" y2="{h - 32}"/>'
            f'<text class="tick" x="{x_of(v):.1f}" y="{h - 20}" text-anchor="middle">{f(v)}</text>'
        )
    if zero and lo < 0 < hi:
        body.append(f'<line class="axis" x1="{x_of(0):.1f}" x2="{x_of(0):.1f}" y1="{TOP}" y2="{h - 32}"/>')
    for i, (lab, point, a, b) in enumerate(rows):
        y = TOP + i * row_h + row_h / 2
        body.append(f'<text class="tick" x="{label_w - 8}" y="{y + 4:.1f}" text-anchor="end">{escape(lab)}</text>')
        if a is not None and b is not None:
            body.append(
                f'<line class="interval s{i % 6}" x1="{x_of(a):.1f}" x2="{x_of(b):.1f}" y1="{y:.1f}" y2="{y:.1f}"/>'
                f'<line class="interval s{i % 6}" x1="{x_of(a):.1f}" x2="{x_of(a):.1f}" y1="{y - 6:.1f}" y2="{y + 6:.1f}"/>'
                f'<line class="interval s{i % 6}" x1="{x_of(b):.1f}" x2="{x_of(b):.1f}" y1="{y - 6:.1f}" y2="{y + 6:.1f}"/>'
            )
        if point is not None:
            body.append(
                f'<circle class="s{i % 6}" cx="{x_of(point):.1f}" cy="{y:.1f}" r="5">'
                f"<title>{escape(lab)}: {f(point)} (95% interval {f(a)} to {f(b)})</title></circle>"
            )
    desc = desc or f"{title}: " + "; ".join(f"{lab} {f(p)} (95% interval {f(a)} to {f(b)})" for lab, p, a, b in rows)
    svg = (
        f'<svg class="chart" viewBox="0 0 {w} {h}" role="img" aria-labelledby="ct{n} cd{n}" '
        f'xmlns="http://www.w3.org/2000/svg"><title id="ct{n}">{escape(title)}</title><desc id="cd{n}">{escape(desc)}</desc>'
        + "".join(body)
        + f'<text class="label" x="{label_w + pw / 2:.0f}" y="{h - 4}" text-anchor="middle">{escape(x_label)}</text></svg>'
    )
    table = (
        '<details class="chart-data"><summary>' + str(escape(title)) + ': data table</summary><div class="scroll"><table><thead><tr>'
        '<th scope="col">group</th><th scope="col">estimate</th><th scope="col">95% low</th><th scope="col">95% high</th>'
        "</tr></thead><tbody>"
        + "".join(f'<tr><th scope="row">{escape(lab)}</th><td>{f(p)}</td><td>{f(a)}</td><td>{f(b)}</td></tr>' for lab, p, a, b in rows)
        + "</tbody></table></div></details>"
    )
    return Markup(svg + table)


def sparkline(title: str, days: int, points: Sequence[tuple[int, float]], *, vmax: float = 100.0) -> Markup:
    """A word-sized line for a table cell: ``points`` are (day index 0..days-1, value) on a
    0..vmax scale, gaps where a day has no value. No axes: its text alternative is the
    title (first and last value), and the figure it illustrates sits beside it."""
    n = next(_ids)
    w, h, pad = 96, 24, 2
    if points:
        first, last = points[0][1], points[-1][1]
        desc = f"{title}: {len(points)} days, from {_fmt(first)} to {_fmt(last)}"
    else:
        desc = f"{title}: no score"

    def xy(i: int, v: float) -> str:
        return f"{pad + (w - 2 * pad) * i / max(1, days - 1):.1f},{h - pad - (h - 2 * pad) * max(0.0, min(v, vmax)) / vmax:.1f}"

    runs: list[list[tuple[int, float]]] = []
    for i, v in points:
        if runs and runs[-1][-1][0] == i - 1:
            runs[-1].append((i, v))
        else:
            runs.append([(i, v)])
    body = "".join(
        f'<polyline class="line s0" fill="none" points="{" ".join(xy(i, v) for i, v in run)}"/>'
        if len(run) > 1
        else f'<circle class="s0" cx="{xy(*run[0]).split(",")[0]}" cy="{xy(*run[0]).split(",")[1]}" r="1.5"/>'
        for run in runs
    )
    return Markup(
        f'<svg class="spark" viewBox="0 0 {w} {h}" width="{w}" height="{h}" role="img" aria-labelledby="st{n}" '
        f'xmlns="http://www.w3.org/2000/svg"><title id="st{n}">{escape(desc)}</title>{body}</svg>'
    )
