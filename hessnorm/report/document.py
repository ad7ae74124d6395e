"""Report documents: one builder writes Markdown and self-contained HTML together."""

from __future__ import annotations

import base64
import html
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from hessnorm._io import atomic_write_bytes
from hessnorm.report.tables import format_number

# ---------------------------------------------------------------------------- writing

__all__: list[str] = []  # internal to hessnorm.report


def _md_cell(x: Any) -> str:
    return format_number(x).replace("|", "\\|").replace("\n", " ")


def _md_table(df: pd.DataFrame) -> str:
    head = "| " + " | ".join(str(c) for c in df.columns) + " |"

    sep = "|" + "|".join("---" for _ in df.columns) + "|"
    body = [
        "| " + " | ".join(_md_cell(v) for v in row) + " |" for row in df.itertuples(index=False)
    ]
    return "\n".join([head, sep, *body])


def _html_inline(text: str) -> str:
    out = html.escape(text)
    out = re.sub(r"`([^`]+)`", r"<code>\1</code>", out)
    return re.sub(r"\*\*([^*]+)\*\*", r"<b>\1</b>", out)


def _html_table(df: pd.DataFrame) -> str:
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in df.columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(format_number(v))}</td>" for v in row) + "</tr>"
        for row in df.itertuples(index=False)
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


_CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; max-width: 1100px;
       margin: 2em auto; padding: 0 1em; color: #222; line-height: 1.45; }
h1 { border-bottom: 2px solid #ddd; padding-bottom: .3em; }
h2 { border-bottom: 1px solid #eee; padding-bottom: .2em; margin-top: 1.8em; }
table { border-collapse: collapse; margin: .8em 0; font-size: 13px; }
th, td { border: 1px solid #ccc; padding: 4px 8px; text-align: left; }
th { background: #f3f3f3; }
tr:nth-child(even) td { background: #fafafa; }
img { max-width: 100%; border: 1px solid #eee; margin: .5em 0; }
code { background: #f3f3f3; padding: 0 3px; border-radius: 3px; }
.csv { font-size: 12px; color: #666; }
"""


class Doc:
    """Report content as blocks, rendered to Markdown and to self-contained HTML.

    Tables and images are also written to ``out_dir`` (a table as CSV data).

    Example:
        >>> import tempfile
        >>> doc = Doc(Path(tempfile.mkdtemp()))
        >>> doc.h(1, "Report")
        >>> doc.p("**bold** and `code`")
        >>> doc.table(pd.DataFrame({"x": [1.5]}), "t.csv", pd.DataFrame({"x": [1.5]}))
        >>> print(doc.markdown())
        # Report
        <BLANKLINE>
        **bold** and `code`
        <BLANKLINE>
        | x |
        |---|
        | 1.5 |
        <BLANKLINE>
        Data: `t.csv`
        <BLANKLINE>
        >>> "<p><b>bold</b> and <code>code</code></p>" in doc.html("Report")
        True
        >>> (doc.out_dir / "t.csv").read_text()
        'x\\n1.5\\n'
    """

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = out_dir
        self.blocks: list[tuple] = []
        self.images: dict[str, bytes] = {}

    def h(self, level: int, text: str) -> None:
        self.blocks.append(("h", level, text))

    def p(self, text: str) -> None:
        self.blocks.append(("p", text))

    def ul(self, items: Sequence[str]) -> None:
        self.blocks.append(("ul", list(items)))

    def table(self, display: pd.DataFrame, csv_name: str, data: pd.DataFrame) -> None:
        atomic_write_bytes(self.out_dir / csv_name, data.to_csv(index=False).encode())
        self.blocks.append(("table", display, csv_name))

    def image(self, name: str, png: bytes, alt: str) -> None:
        atomic_write_bytes(self.out_dir / name, png)
        self.images[name] = png
        self.blocks.append(("img", name, alt))

    def markdown(self) -> str:
        out = []
        for b in self.blocks:
            if b[0] == "h":
                out.append("#" * b[1] + " " + b[2])
            elif b[0] == "p":
                out.append(b[1])
            elif b[0] == "ul":
                out.append("\n".join(f"- {x}" for x in b[1]))
            elif b[0] == "table":
                out.append(_md_table(b[1]) + f"\n\nData: `{b[2]}`")
            elif b[0] == "img":
                out.append(f"![{b[2]}]({b[1]})")
        return "\n\n".join(out) + "\n"

    def html(self, title: str) -> str:
        out = []
        for b in self.blocks:
            if b[0] == "h":
                out.append(f"<h{b[1]}>{_html_inline(b[2])}</h{b[1]}>")
            elif b[0] == "p":
                out.append(f"<p>{_html_inline(b[1])}</p>")
            elif b[0] == "ul":
                out.append("<ul>" + "".join(f"<li>{_html_inline(x)}</li>" for x in b[1]) + "</ul>")
            elif b[0] == "table":
                out.append(_html_table(b[1]))
                out.append(f'<p class="csv">Data: <code>{html.escape(b[2])}</code></p>')
            elif b[0] == "img":
                data = base64.b64encode(self.images[b[1]]).decode("ascii")
                out.append(
                    f'<figure><img alt="{html.escape(b[2])}" src="data:image/png;base64,{data}">'
                    f'<figcaption class="csv">{html.escape(b[1])}</figcaption></figure>'
                )
        return (
            '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>\n"
            + "\n".join(out)
            + "\n</body></html>\n"
        )
