r"""A tiny document model rendered to Markdown and to self-contained HTML.

The report is built once as a list of blocks; :func:`to_markdown` writes figures as PNG files
beside ``report.md`` and :func:`to_html` embeds them as base64, so ``report.html`` is one file
that can be mailed or attached to a ticket.

Example:
    >>> doc = [Heading("Demo", 1), Paragraph("Errors out of 1,000.")]
    >>> doc.append(Table(["a", "b"], [["1", "x|y"]]))
    >>> print(to_markdown(doc, figure_dir=None))
    # Demo
    <BLANKLINE>
    Errors out of 1,000.
    <BLANKLINE>
    | a | b |
    |---|---|
    | 1 | x\|y |
    <BLANKLINE>

Text from a study file (labels, descriptions) may hold any character. In Markdown every table
cell has ``|`` escaped and line breaks turned into spaces (:func:`md_cell`), and headings,
captions and list items are kept on one line, so a label cannot add columns or break the
layout; in HTML everything is escaped.
"""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass, field
from pathlib import Path

from robustlab.atomic import write_bytes_atomic


@dataclass
class Heading:
    """A section title of ``level`` 1-3."""

    text: str
    level: int = 2


@dataclass
class Paragraph:
    """Plain text (may hold ``**bold**`` and `` `code` ``, kept as-is in Markdown)."""

    text: str


@dataclass
class Bullets:
    """An unordered list."""

    items: list[str]


@dataclass
class Table:
    """A table with a header row; ``caption`` is printed above it."""

    header: list[str]
    rows: list[list[str]]
    caption: str = ""
    align_first_left: bool = True


@dataclass
class Figure:
    """A PNG image with a caption."""

    name: str
    png: bytes
    caption: str = ""


@dataclass
class Details:
    """A collapsible group of blocks (``<details>`` in both formats)."""

    summary: str
    blocks: list[Block] = field(default_factory=list)


Block = Heading | Paragraph | Bullets | Table | Figure | Details


def md_line(text: str) -> str:
    r"""``text`` on one Markdown line: line breaks (and the spaces around them) become a space.

    Example:
        >>> md_line("two\n  lines")
        'two lines'
    """
    return " ".join(part.strip() for part in str(text).splitlines() if part.strip())


def md_cell(text: str) -> str:
    r"""``text`` as one Markdown table cell: on one line, ``|`` escaped as ``\|``.

    Example:
        >>> md_cell("a|b\nc")
        'a\\|b c'
    """
    return md_line(text).replace("|", "\\|")


def _md_row(cells: list[str]) -> str:
    return "| " + " | ".join(md_cell(c) for c in cells) + " |"


def _md_table(table: Table) -> list[str]:
    lines = []
    if table.caption:
        lines += [f"**{md_line(table.caption)}**", ""]
    lines.append(_md_row(table.header))
    lines.append("|" + "|".join("---" for _ in table.header) + "|")
    lines += [_md_row(row) for row in table.rows]
    return lines


def to_markdown(blocks: list[Block], figure_dir: Path | None) -> str:
    """Render to Markdown; figures are written into ``figure_dir`` (skipped when None)."""
    out: list[str] = []
    for block in blocks:
        if isinstance(block, Heading):
            out += ["#" * block.level + " " + md_line(block.text), ""]
        elif isinstance(block, Paragraph):
            out += [block.text, ""]
        elif isinstance(block, Bullets):
            out += [f"- {md_line(item)}" for item in block.items] + [""]
        elif isinstance(block, Table):
            out += [*_md_table(block), ""]
        elif isinstance(block, Figure):
            if figure_dir is not None:
                figure_dir.mkdir(parents=True, exist_ok=True)
                write_bytes_atomic(figure_dir / f"{block.name}.png", block.png)
                out += [f"![{md_line(block.caption)}]({figure_dir.name}/{block.name}.png)", ""]
            if block.caption:
                out += [f"*{md_line(block.caption)}*", ""]
        else:
            out += ["<details>", f"<summary>{md_line(block.summary)}</summary>", ""]
            out += [to_markdown(block.blocks, figure_dir), "</details>", ""]
    return "\n".join(out)


def _inline(text: str) -> str:
    escaped = html.escape(text)
    parts = escaped.split("**")
    escaped = "".join(f"<b>{p}</b>" if i % 2 else p for i, p in enumerate(parts))
    parts = escaped.split("`")
    return "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))


def _html_blocks(blocks: list[Block]) -> list[str]:
    out: list[str] = []
    for block in blocks:
        if isinstance(block, Heading):
            out.append(f"<h{block.level}>{_inline(block.text)}</h{block.level}>")
        elif isinstance(block, Paragraph):
            out.append(f"<p>{_inline(block.text)}</p>")
        elif isinstance(block, Bullets):
            out.append("<ul>" + "".join(f"<li>{_inline(i)}</li>" for i in block.items) + "</ul>")
        elif isinstance(block, Table):
            caption = f"<caption>{_inline(block.caption)}</caption>" if block.caption else ""
            head = "".join(f"<th>{_inline(h)}</th>" for h in block.header)
            body = "".join(
                "<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in row) + "</tr>"
                for row in block.rows
            )
            out.append(
                f"<table>{caption}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
            )
        elif isinstance(block, Figure):
            data = base64.b64encode(block.png).decode()
            out.append(
                f'<figure><img alt="{html.escape(block.caption)}" '
                f'src="data:image/png;base64,{data}">'
                f"<figcaption>{_inline(block.caption)}</figcaption></figure>"
            )
        else:
            out.append(f"<details><summary>{_inline(block.summary)}</summary>")
            out += _html_blocks(block.blocks)
            out.append("</details>")
    return out


STYLE = """
body { font-family: system-ui, -apple-system, 'Segoe UI', sans-serif; max-width: 1100px;
       margin: 2em auto; padding: 0 1em; color: #1d232a; line-height: 1.45; }
h1 { border-bottom: 3px solid #3b6ea8; padding-bottom: .2em; }
h2 { margin-top: 2em; border-bottom: 1px solid #d5dbe1; padding-bottom: .15em; }
table { border-collapse: collapse; margin: .6em 0 1.4em; font-variant-numeric: tabular-nums; }
caption { text-align: left; font-weight: 600; padding-bottom: .3em; }
th, td { border: 1px solid #d5dbe1; padding: .25em .7em; text-align: right; }
th { background: #eef2f6; } td:first-child, th:first-child { text-align: left; }
tbody tr:nth-child(even) { background: #f8fafc; }
figure { margin: 1em 0 2em; } img { max-width: 100%; }
figcaption { color: #5a6570; font-size: .92em; }
code { background: #eef2f6; padding: 0 .25em; border-radius: 3px; }
details { margin: 1em 0; } summary { cursor: pointer; font-weight: 600; }
"""


def to_html(blocks: list[Block], title: str) -> str:
    """Render to one self-contained HTML page (styles inline, figures embedded)."""
    body = "\n".join(_html_blocks(blocks))
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        f"<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>{html.escape(title)}</title><style>{STYLE}</style></head>"
        f"<body>\n{body}\n</body></html>\n"
    )
