"""HTML (self-contained: images embedded, no external assets) and Markdown renderings of a report."""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass
from pathlib import Path

from nnunet_mtl.report.content import Table

SECTIONS = {
    "summary": "Run",
    "metrics": "Metrics against the targets",
    "evaluation": "All metrics with confidence intervals",
    "training": "Training curves",
    "confusion": "Subtype confusion matrix",
    "calibration": "Calibration of the subtype probabilities",
    "inference": "Inference path and mirroring (chosen on validation)",
    "postprocessing": "Postprocessing (determined on validation)",
    "cases": "Per case",
    "viewer": "Case viewer",
    "overlays": "Best and worst cases",
    "benchmark": "Inference benchmark",
}

STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:1100px;color:#222;
line-height:1.4;padding:0 1rem}h1{font-size:1.6rem}h2{border-bottom:1px solid #ddd;padding-bottom:.2rem;margin-top:2rem}
table{border-collapse:collapse;margin:.5rem 0;font-size:.9rem}th,td{border:1px solid #ccc;padding:.25rem .6rem;
text-align:left}th{background:#f3f3f3}th.sortable{cursor:pointer}th.sortable:after{content:" \\2195";color:#999}
td.num{text-align:right;font-variant-numeric:tabular-nums}td.yes{background:#e3f6e5}td.no{background:#fde8e8}
table.facts th{white-space:nowrap;vertical-align:top}table.facts td{word-break:break-all}
.scroll{overflow-x:auto}
img{max-width:100%;border:1px solid #eee}.note{color:#666}figure{margin:1rem 0}figcaption{color:#555;font-size:.9rem}
"""

SORT_SCRIPT = """
document.querySelectorAll("table.sortable").forEach(function(table){
  table.querySelectorAll("th").forEach(function(th,col){
    th.classList.add("sortable");
    th.addEventListener("click",function(){
      var body=table.tBodies[0], rows=Array.from(body.rows), numeric=th.dataset.numeric==="1";
      var asc=th.dataset.order!=="asc"; th.dataset.order=asc?"asc":"desc";
      rows.sort(function(a,b){
        var x=a.cells[col].textContent, y=b.cells[col].textContent;
        if(numeric){x=parseFloat(x);y=parseFloat(y);x=isNaN(x)?-1:x;y=isNaN(y)?-1:y;return asc?x-y:y-x;}
        return asc?x.localeCompare(y):y.localeCompare(x);
      });
      rows.forEach(function(r){body.appendChild(r);});
    });
  });
});
"""


@dataclass
class Figure:
    path: Path
    caption: str


@dataclass
class Section:
    key: str
    tables: list[Table]
    figures: list[Figure]
    notes: list[str]
    sortable: bool = False
    keyed_rows: bool = False  # HTML rows carry their first cell as data-case (the viewer opens a row's case)
    html: str = ""  # HTML-only content after the tables (the case viewer)


def _table_html(table: Table, sortable: bool, keyed_rows: bool = False) -> str:
    numeric = table.numeric or [False] * len(table.header)
    head = "".join(f'<th data-numeric="{int(n)}">{html.escape(h)}</th>' for h, n in zip(table.header, numeric))
    body = []
    for row in table.rows:
        cells = []
        for value, is_number in zip(row, numeric):
            css = "num" if is_number else (value if value in ("yes", "no") else "")
            cells.append(f'<td class="{css}">{html.escape(value)}</td>' if css else f"<td>{html.escape(value)}</td>")
        key = f' data-case="{html.escape(row[0])}"' if keyed_rows else ""
        body.append(f"<tr{key}>" + "".join(cells) + "</tr>")
    css = ' class="sortable"' if sortable else ""
    table_html = f"<table{css}><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
    return f'<div class="scroll">{table_html}</div>'


def _embedded(figure: Figure) -> str:
    data = base64.b64encode(figure.path.read_bytes()).decode("ascii")
    alt = html.escape(figure.caption)
    return (
        f'<figure><img src="data:image/png;base64,{data}" alt="{alt}" data-file="{figure.path.name}">'
        f"<figcaption>{alt}</figcaption></figure>"
    )


def render_html(title: str, facts: list[tuple[str, str]], sections: list[Section]) -> str:
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title><style>{STYLE}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        f'<section id="summary"><h2>{SECTIONS["summary"]}</h2>',
        '<table class="facts"><tbody>'
        + "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in facts)
        + "</tbody></table>",
        "</section>",
    ]
    for section in sections:
        parts.append(f'<section id="{section.key}"><h2>{SECTIONS[section.key]}</h2>')
        parts += [f'<p class="note">{html.escape(note)}</p>' for note in section.notes]
        parts += [_table_html(table, section.sortable, section.keyed_rows) for table in section.tables]
        parts += [section.html] if section.html else []
        parts += [_embedded(figure) for figure in section.figures]
        parts.append("</section>")
    parts.append(f"<script>{SORT_SCRIPT}</script></body></html>")
    return "\n".join(parts) + "\n"


def _table_markdown(table: Table) -> list[str]:
    lines = ["| " + " | ".join(table.header) + " |", "|" + "---|" * len(table.header)]
    return lines + ["| " + " | ".join(row) + " |" for row in table.rows]


def render_markdown(title: str, facts: list[tuple[str, str]], sections: list[Section]) -> str:
    lines = [f"# {title}", "", f"## {SECTIONS['summary']}", ""]
    lines += [f"- {name}: {value}" for name, value in facts]
    for section in sections:
        lines += ["", f"## {SECTIONS[section.key]}", ""]
        lines += [f"{note}\n" for note in section.notes]
        for table in section.tables:
            lines += [*_table_markdown(table), ""]
        lines += [f"![{figure.caption}]({figure.path.name})\n" for figure in section.figures]
    return "\n".join(lines).rstrip() + "\n"
