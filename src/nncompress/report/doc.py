"""One document, two renderings: a self-contained HTML page and its Markdown twin.

Sections are written once against ``Doc``; every piece of text is escaped
here, at the single place where it meets markup, so nothing read from a run
directory can inject HTML. Values read from summary.json travel as ``Cell``s
carrying their key path and raw JSON value, which the HTML exposes as
``data-field`` / ``data-value`` so a test (or a person) can check the page
against the file.
"""

from __future__ import annotations

import base64
import html
import json
import re
import urllib.parse
from dataclasses import dataclass
from typing import Any, Optional, Sequence, Union


@dataclass(frozen=True)
class Cell:
    """Display text, and where it came from when it came from summary.json."""

    text: str
    field: Optional[str] = None
    value: Any = None
    num: bool = False


Inline = Union[str, Cell]

CSS = """
:root { --ink:#1d2330; --muted:#5b6472; --line:#d9dee6; --accent:#3b6ea8; --bg:#f6f8fb; }
* { box-sizing: border-box; }
body { margin: 0; font: 15px/1.5 -apple-system, "Segoe UI", Roboto, "DejaVu Sans", Arial, sans-serif;
       color: var(--ink); background: #fff; }
main { max-width: 1180px; margin: 0 auto; padding: 24px 28px 64px; }
h1 { font-size: 26px; margin: 8px 0 2px; }
h2 { font-size: 19px; margin: 36px 0 10px; padding-bottom: 4px; border-bottom: 2px solid var(--line); }
.subtitle { color: var(--muted); margin: 0 0 18px; word-break: break-all; }
.cards { display: grid; grid-template-columns: repeat(auto-fit, minmax(170px, 1fr)); gap: 12px; }
.card { background: var(--bg); border: 1px solid var(--line); border-radius: 8px; padding: 12px 14px; }
.card .label { color: var(--muted); font-size: 13px; }
.card .value { font-size: 24px; font-weight: 650; font-variant-numeric: tabular-nums; margin: 2px 0;
               white-space: nowrap; }
.card .sub { color: var(--muted); font-size: 12.5px; }
p { margin: 8px 0; }
.note { color: var(--muted); font-style: italic; }
table { border-collapse: collapse; margin: 8px 0; font-size: 14px; }
th, td { padding: 5px 10px; border-bottom: 1px solid var(--line); text-align: left; vertical-align: top; }
th { background: var(--bg); font-weight: 600; font-size: 13px; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tbody tr:nth-child(even) { background: #fbfcfe; }
tfoot td { font-weight: 600; border-top: 2px solid var(--ink); }
.scroll { overflow-x: auto; }
figure { margin: 12px 0; }
figure img { max-width: 100%; height: auto; border: 1px solid var(--line); border-radius: 6px; }
figcaption { color: var(--muted); font-size: 13px; margin-top: 4px; }
pre { background: var(--bg); border: 1px solid var(--line); border-radius: 6px; padding: 12px 14px;
      overflow-x: auto; font-size: 13px; line-height: 1.4; }
details summary { cursor: pointer; color: var(--accent); margin: 6px 0; }
.banner { background: #b00020; color: #fff; font-weight: 700; padding: 10px 28px; }
"""

# Counts the images that actually decoded: a page whose data: URIs were
# mangled (a mail client, a bad copy) says so instead of showing empty boxes.
SCRIPT = """
window.addEventListener("load", function () {
  var imgs = document.images, ok = 0;
  for (var i = 0; i < imgs.length; i++) {
    if (imgs[i].complete && imgs[i].naturalWidth > 0) { ok++; }
  }
  var root = document.documentElement;
  root.setAttribute("data-images-total", String(imgs.length));
  root.setAttribute("data-images-loaded", String(ok));
  if (ok < imgs.length) {
    var n = imgs.length - ok, banner = document.getElementById("image-check");
    banner.textContent = n + (n === 1 ? " image" : " images") + " failed to load";
    banner.hidden = false;
  }
});
"""


def _attr(text: str) -> str:
    return html.escape(text, quote=True)


def _h(part: Inline) -> str:
    """One inline piece as HTML; a summary value becomes a tagged span."""
    if isinstance(part, Cell):
        return f"<span{_data(part)}>{html.escape(part.text)}</span>" if part.field else html.escape(part.text)
    return html.escape(part)


def _data(cell: Cell) -> str:
    if not cell.field:
        return ""
    return f' data-field="{_attr(cell.field)}" data-value="{_attr(json.dumps(cell.value))}"'


_MD_SPECIAL = re.compile(r"([\\`*_\[\]|#])")


def md_escape(text: str) -> str:
    """Text for Markdown: HTML entities (renderers pass raw HTML through) and
    the characters that would start emphasis, links or table cells."""
    return _MD_SPECIAL.sub(r"\\\1", html.escape(text, quote=False)).replace("\n", " ")


def _m(part: Inline) -> str:
    return md_escape(part.text if isinstance(part, Cell) else part)


def _fence(text: str) -> str:
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    return "`" * max(3, longest + 1)


class Doc:
    """Accumulates the HTML body, the Markdown text and the figures in step."""

    def __init__(self, title: str, files_dir: str) -> None:
        """``files_dir``: the Markdown's image folder, relative to the Markdown file."""
        self.title = title
        self.files_dir = files_dir
        self.html: list[str] = []
        self.md: list[str] = []
        self.images: dict[str, bytes] = {}

    def heading(self, text: str, anchor: str, level: int = 2) -> None:
        self.html.append(f'<h{level} id="{_attr(anchor)}">{html.escape(text)}</h{level}>')
        self.md.append(f"{'#' * level} {md_escape(text)}\n")

    def para(self, parts: Sequence[Inline], cls: str = "") -> None:
        klass = f' class="{cls}"' if cls else ""
        self.html.append(f"<p{klass}>{''.join(_h(p) for p in parts)}</p>")
        text = "".join(_m(p) for p in parts)
        self.md.append(f"*{text}*\n" if cls == "note" else f"{text}\n")

    def note(self, text: str) -> None:
        """A one-line note, e.g. for a section left out."""
        self.para([text], cls="note")

    def cards(self, items: Sequence[tuple[str, Inline, Sequence[Inline]]]) -> None:
        """Headline figures: (label, value, small print)."""
        out = ['<div class="cards">']
        for label, value, sub in items:
            out.append(
                f'<div class="card"><div class="label">{html.escape(label)}</div>'
                f'<div class="value">{_h(value)}</div>'
                f'<div class="sub">{"".join(_h(p) for p in sub)}</div></div>'
            )
            small = "".join(_m(p) for p in sub)
            self.md.append(f"- {md_escape(label)}: **{_m(value)}**" + (f" ({small})" if small else ""))
        out.append("</div>")
        self.html.append("".join(out))
        self.md.append("")

    def table(
        self,
        header: Sequence[str],
        rows: Sequence[Sequence[Inline]],
        foot: Sequence[Sequence[Inline]] = (),
        collapsed: str = "",
    ) -> None:
        """A table; numeric columns align right. ``collapsed`` folds it (HTML) under that summary line."""
        nums = [any(isinstance(c := r[i], Cell) and c.num for r in [*rows, *foot]) for i in range(len(header))]
        cls = lambda i: ' class="num"' if nums[i] else ""  # noqa: E731

        def tr(row: Sequence[Inline]) -> str:
            return (
                "<tr>"
                + "".join(
                    f"<td{cls(i)}{_data(c) if isinstance(c, Cell) else ''}>"
                    f"{html.escape(c.text if isinstance(c, Cell) else c)}</td>"
                    for i, c in enumerate(row)
                )
                + "</tr>"
            )

        body = (
            "<table><thead><tr>"
            + "".join(f"<th{cls(i)}>{html.escape(h)}</th>" for i, h in enumerate(header))
            + "</tr></thead><tbody>"
            + "".join(tr(r) for r in rows)
            + "</tbody>"
            + (f"<tfoot>{''.join(tr(r) for r in foot)}</tfoot>" if foot else "")
            + "</table>"
        )
        if collapsed:
            body = f"<details><summary>{html.escape(collapsed)}</summary>{body}</details>"
        self.html.append(f'<div class="scroll">{body}</div>')
        md = [
            "| " + " | ".join(md_escape(h) for h in header) + " |",
            "|" + "|".join("---:" if n else "---" for n in nums) + "|",
        ]
        md += ["| " + " | ".join(_m(c) for c in r) + " |" for r in rows]
        md += ["| " + " | ".join(f"**{_m(c)}**" if _m(c) else "" for c in r) + " |" for r in foot]
        self.md.append("\n".join(md) + "\n")

    def image(self, name: str, png: bytes, alt: str, caption: str = "") -> None:
        """A figure: embedded as a data: URI in HTML, a PNG file beside the Markdown."""
        self.images[name] = png
        uri = "data:image/png;base64," + base64.b64encode(png).decode("ascii")
        cap = f"<figcaption>{html.escape(caption)}</figcaption>" if caption else ""
        self.html.append(f'<figure><img src="{uri}" alt="{_attr(alt)}">{cap}</figure>')
        link = urllib.parse.quote(f"{self.files_dir}/{name}")
        self.md.append(f"![{md_escape(alt)}]({link})\n" + (f"\n*{md_escape(caption)}*\n" if caption else ""))

    def pre(self, text: str, lang: str = "") -> None:
        self.html.append(f"<pre>{html.escape(text)}</pre>")
        fence = _fence(text)
        self.md.append(f"{fence}{lang}\n{text.rstrip(chr(10))}\n{fence}\n")

    def render_html(self, subtitle: Sequence[Inline] = ()) -> str:
        sub = f'<p class="subtitle">{"".join(_h(p) for p in subtitle)}</p>' if subtitle else ""
        return (
            '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f"<title>{html.escape(self.title)}</title>\n<style>{CSS}</style>\n<script>{SCRIPT}</script>\n"
            '</head>\n<body>\n<div id="image-check" class="banner" hidden></div>\n<main>\n'
            f"<h1>{html.escape(self.title)}</h1>\n{sub}\n" + "\n".join(self.html) + "\n</main>\n</body>\n</html>\n"
        )

    def render_markdown(self, subtitle: Sequence[Inline] = ()) -> str:
        head = f"# {md_escape(self.title)}\n\n" + (f"{''.join(_m(p) for p in subtitle)}\n\n" if subtitle else "")
        return head + "\n".join(self.md)
