"""The results: one text table (figure, ratio, mgmtd's value, the reference and
its value), the growth table, latest.json, and a bar chart of the ratios
(latest.png with matplotlib, otherwise a hand-written latest.svg)."""

from __future__ import annotations

import html
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass
class Row:
    figure: str                  # e.g. "1 formation, 3 nodes"
    value: float | None          # mgmtd's figure
    unit: str                    # "s", "ms", "MiB"
    reference: str = ""          # what it is compared with
    ref_value: float | None = None
    error: str = ""
    compare: bool = True         # False: the reference is context, not a rival (no ratio)
    ref_text: str = ""           # shown instead of ref_value (a spread in the noise): no ratio

    @property
    def below_noise(self) -> bool:
        """A net time at or under zero: the difference drowned in the noise."""
        return self.value is not None and self.value <= 0

    @property
    def ratio(self) -> float | None:
        if (not self.compare or self.value is None or not self.ref_value or self.below_noise
                or self.ref_value < 0 or self.ref_text):
            return None
        return self.value / self.ref_value


def fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit == "ms":
        return f"{value * 1000:.1f} ms"
    if unit == "MiB":
        return f"{value / 2**20:.1f} MiB"
    if unit == "s":
        return f"{value:.2f} s"
    return f"{value:g} {unit}".strip()


def fmt_ratio(ratio: float | None) -> str:
    return "-" if ratio is None else f"{ratio:.2f}x" if ratio < 10 else f"{ratio:.0f}x"


def markdown(headers: list[str], rows: list[list[str]], right: set[int] = frozenset()) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h)
              for i, h in enumerate(headers)]

    def line(cells):
        return "| " + " | ".join(c.rjust(w) if i in right else c.ljust(w)
                                 for i, (c, w) in enumerate(zip(cells, widths, strict=True))) + " |"

    rule = "|" + "|".join(("-" * (w + 1) + ":") if i in right else "-" * (w + 2)
                          for i, w in enumerate(widths)) + "|"
    return "\n".join([line(headers), rule, *(line(r) for r in rows)])


def main_table(rows: list[Row]) -> str:
    cells = []
    for row in rows:
        if row.error:
            cells.append([row.figure, "-", "error", row.reference, row.error[:70]])
            continue
        ratio = "noise" if row.below_noise and row.reference else fmt_ratio(row.ratio)
        cells.append([row.figure, ratio, fmt(row.value, row.unit),
                      row.reference or "-",
                      (row.ref_text or fmt(row.ref_value, row.unit)) if row.reference else "-"])
    return markdown(["figure", "ratio", "mgmtd", "reference (same run)", "reference"], cells,
                    right={1, 2, 4})


def growth_table(sizes: dict[int, dict]) -> str:
    cells = []
    for count, r in sorted(sizes.items()):
        if "error" in r:
            cells.append([str(count), "error", r["error"][:60], *[""] * 8])
            continue

        def per(seconds: float, r=r) -> str:  # ms per resource
            return f"{seconds / r['resources'] * 1000:.3f}"

        cells.append([
            str(count), f"{r['cold']:.2f}", per(r["cold"]), f"{r['cold_cpu']:.2f}",
            f"{r['floor_cold']:.2f}", f"{r['nochange']:.2f}", per(r["nochange"]),
            f"{r['nochange_cpu']:.2f}", fmt(r["repair"]["p50"], "ms"), fmt(r["repair"]["p99"], "ms"),
            fmt(r["engine_rss"], "MiB"),
        ])
    return markdown(["files", "cold s", "ms/res", "cold CPU s", "floor s", "no-change s", "ms/res",
                     "no-change CPU s", "repair p50", "repair p99", "engine RSS"], cells,
                    right=set(range(11)))


def write_json(path: Path, meta: dict, rows: list[Row], raw: dict) -> None:
    data = {**meta,
            "rows": [{**asdict(r), "ratio": r.ratio} for r in rows],
            "scenarios": raw}
    path.write_text(json.dumps(data, indent=2, default=str) + "\n")


def chart_rows(rows: list[Row]) -> list[tuple[str, float]]:
    return [(f"{r.figure} / {r.reference}", r.ratio) for r in rows
            if r.ratio is not None and r.ratio > 0 and not r.error]


def write_png(path: Path, rows: list[Row], title: str) -> bool:
    """A horizontal bar chart of the ratios (log scale) with matplotlib, if
    it is installed; False when it is not."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    data = chart_rows(rows)
    fig, ax = plt.subplots(figsize=(10, 0.35 * len(data) + 1.5))
    labels = [label for label, _ in data][::-1]
    values = [value for _, value in data][::-1]
    ax.barh(labels, values, color=["#c0392b" if v > 1 else "#27ae60" for v in values])
    ax.set_xscale("log")
    ax.axvline(1, color="black", linewidth=0.8)
    ax.set_xlabel("mgmtd / reference (log scale; 1 = as fast as the reference)")
    ax.set_title(title)
    for y, v in enumerate(values):
        ax.text(v, y, f" {fmt_ratio(v)}", va="center", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100, bbox_inches="tight")  # long labels: keep title and axis whole
    plt.close(fig)
    return True


def write_svg(path: Path, rows: list[Row], title: str) -> None:
    """The same chart as plain SVG: no dependency at all."""
    data = chart_rows(rows)
    label_w = 20 + int(6.3 * max((len(label) for label, _ in data), default=40))
    plot_w, bar_h, top = 420, 22, 50
    height = top + bar_h * len(data) + 50
    values = [v for _, v in data] or [1.0]
    lo = min(0.5, min(values) / 1.5)
    hi = max(2.0, max(values) * 1.5)
    span = math.log10(hi) - math.log10(lo)

    def x(v: float) -> float:
        return label_w + (math.log10(v) - math.log10(lo)) / span * plot_w

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{label_w + plot_w + 80}" '
             f'height="{height}" font-family="sans-serif" font-size="12">',
             '<rect width="100%" height="100%" fill="white"/>',
             f'<text x="10" y="22" font-size="15" font-weight="bold">{html.escape(title)}</text>']
    decade = math.floor(math.log10(lo))
    while 10 ** decade <= hi:
        for m in (1, 2, 5):
            v = m * 10 ** decade
            if lo <= v <= hi:
                parts.append(f'<line x1="{x(v):.1f}" y1="{top - 5}" x2="{x(v):.1f}" '
                             f'y2="{height - 40}" stroke="#ddd"/>')
                parts.append(f'<text x="{x(v):.1f}" y="{height - 25}" text-anchor="middle" '
                             f'fill="#555">{v:g}x</text>')
        decade += 1
    for i, (label, v) in enumerate(data):
        y = top + i * bar_h
        color = "#c0392b" if v > 1 else "#27ae60"
        x0, x1 = sorted((x(1), x(v)))
        parts.append(f'<text x="{label_w - 8}" y="{y + 15}" text-anchor="end">'
                     f'{html.escape(label)}</text>')
        parts.append(f'<rect x="{x0:.1f}" y="{y + 3}" width="{max(1.0, x1 - x0):.1f}" '
                     f'height="{bar_h - 6}" fill="{color}"/>')
        parts.append(f'<text x="{max(x(v), x(1)) + 4:.1f}" y="{y + 15}">{fmt_ratio(v)}</text>')
    parts.append(f'<line x1="{x(1):.1f}" y1="{top - 5}" x2="{x(1):.1f}" y2="{height - 40}" '
                 'stroke="black"/>')
    parts.append(f'<text x="{label_w}" y="{height - 8}" fill="#555">mgmtd / reference, log scale '
                 '(1x = as fast as the reference; red = slower)</text>')
    parts.append("</svg>")
    path.write_text("\n".join(parts) + "\n")
