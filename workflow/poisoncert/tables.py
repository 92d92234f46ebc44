"""Result tables rendered for reading: markdown (``results/**/*.md``) and a self-contained HTML page.

The HTML page is the table's form in ``snakemake --report``: the report shows HTML files in a
frame, while CSV and markdown files it only offers as downloads. Both renderers take the same
already formatted cells, so a table reads the same in both.

>>> print(markdown(["k", "acc"], [["4", "90.00%"]]), end="")
| k | acc |
|---|---|
| 4 | 90.00% |
>>> "<th>acc</th>" in html_page("t", ["k", "acc"], [["4", "90.00%"]])
True
"""

from __future__ import annotations

from html import escape

__all__ = ["markdown", "html_page"]

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #1e293b; }
h1 { font-size: 1.2em; }
table { border-collapse: collapse; font-size: 0.85em; }
th, td { border: 1px solid #cbd5e1; padding: 0.25em 0.6em; text-align: right; white-space: nowrap; }
th { background: #e2e8f0; position: sticky; top: 0; }
td.text { text-align: left; }
tbody tr:nth-child(even) { background: #f8fafc; }
""".strip()


def markdown(header: list[str], rows: list[list[str]]) -> str:
    """A markdown table (``|`` inside a cell is escaped)."""
    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

    return "\n".join([line(header), "|" + "|".join("---" for _ in header) + "|", *map(line, rows)]) + "\n"


def _is_number(cell: str) -> bool:
    try:
        float(cell.rstrip("%").removesuffix(" pt"))
    except ValueError:
        return False
    return True


def html_page(title: str, header: list[str], rows: list[list[str]]) -> str:
    """A standalone HTML page (inline style, no scripts) with the title and the table; numbers right-aligned."""
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = "\n".join(
        "<tr>" + "".join(f"<td>{escape(c)}</td>" if _is_number(c) or not c else f'<td class="text">{escape(c)}</td>' for c in row) + "</tr>"
        for row in rows
    )
    return (
        f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>{escape(title)}</title>\n'
        f"<style>\n{_STYLE}\n</style>\n</head>\n<body>\n<h1>{escape(title)}</h1>\n"
        f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n{body}\n</tbody>\n</table>\n</body>\n</html>\n"
    )
