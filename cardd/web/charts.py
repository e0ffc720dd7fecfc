"""Bar charts as inline SVG, drawn on the server: no JavaScript, nothing fetched, and the
Content-Security-Policy stays strict (presentation attributes, no style attributes)."""

from __future__ import annotations

from markupsafe import Markup, escape

WIDTH, HEIGHT, LEFT, BOTTOM, TOP = 480, 160, 40, 20, 10


def bars(
    title: str, labels: list[str], values: list[float | None], *, unit: str = "", top: float | None = None
) -> Markup:
    """A bar per label (None: no data, no bar), a y axis from 0 to `top` (default: the largest value),
    an accessible title and a description listing every value."""
    present = [v for v in values if v is not None]
    ceiling = top or max(present, default=0) or 1.0
    n = max(len(values), 1)
    slot = (WIDTH - LEFT) / n
    plot_h = HEIGHT - BOTTOM - TOP
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" role="img"'
        f' class="chart" aria-labelledby="t-{_id(title)}">',
        f'<title id="t-{_id(title)}">{escape(title)}</title>',
        f"<desc>{escape(', '.join(f'{lab}: {_fmt(v, unit)}' for lab, v in zip(labels, values)))}</desc>",
        f'<line x1="{LEFT}" y1="{TOP + plot_h}" x2="{WIDTH}" y2="{TOP + plot_h}" stroke="#888"/>',
        f'<text x="{LEFT - 4}" y="{TOP + 8}" text-anchor="end" font-size="10" fill="#444">'
        f"{escape(_fmt(ceiling, unit))}</text>",
        f'<text x="{LEFT - 4}" y="{TOP + plot_h}" text-anchor="end" font-size="10" fill="#444">0</text>',
    ]
    for i, (label, value) in enumerate(zip(labels, values)):
        x = LEFT + i * slot
        if value is not None:
            h = plot_h * min(value, ceiling) / ceiling
            parts.append(
                f'<rect x="{x + 1:.1f}" y="{TOP + plot_h - h:.1f}" width="{max(slot - 2, 1):.1f}"'
                f' height="{h:.1f}" fill="#2b6cb0"><title>{escape(label)}: {escape(_fmt(value, unit))}'
                "</title></rect>"
            )
        if i % 4 == 0:
            parts.append(
                f'<text x="{x + slot / 2:.1f}" y="{HEIGHT - 6}" text-anchor="middle" font-size="10"'
                f' fill="#444">{escape(label)}</text>'
            )
    parts.append("</svg>")
    return Markup("".join(parts))


def _fmt(value: float | None, unit: str) -> str:
    return "no calls" if value is None else f"{value:.0f}{unit}"


def _id(title: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in title.lower())
