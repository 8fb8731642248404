"""`cupl collect DIR`: one table from a folder of executed notebooks.

Batch reruns (one papermill run per value of a hyperparameter, per seed, per bank) each leave
an executed notebook. Each becomes one row: the papermill parameters it ran with (notebook
metadata `papermill.parameters`), its run time, and every scalar it glued.

Glued values are read from the outputs as the gluing libraries store them:
- myst-nb `glue(name, value)`: a display_data output whose metadata holds
  `scrapbook: {name, mime_prefix}`; its mime types carry `mime_prefix`
  (`application/papermill.record/` when `display=False`) and `text/plain` is the value's repr;
- scrapbook `sb.glue`: `application/scrapbook.scrap.json+json` with `{name, data}`;
- papermill < 2 `pm.record`: `application/papermill.record+json` holding `{name: value}`.
Non-scalar glues (figures, tables) are left out.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from cupl.files import atomic_write
from cupl.util import parse_literal

FIXED_COLUMNS = ("notebook", "run_time_s")


def _is_scalar(value) -> bool:
    return isinstance(value, (bool, int, float, str))


def parse_repr(text: str):
    """The scalar a `text/plain` repr shows ('0.25', 'np.float64(0.25)', "'x'"), else None."""
    value = parse_literal(text, strict=True)
    return value if _is_scalar(value) else None


def _text(value) -> str:
    return "".join(value) if isinstance(value, list) else str(value)


def glued_scalars(nb: dict) -> dict:
    """{name: scalar} of every scalar glued in the outputs of an executed notebook (dict
    as stored in the .ipynb)."""
    found: dict = {}
    for cell in nb.get("cells", []):
        for output in cell.get("outputs", []):
            data = output.get("data", {})
            meta = output.get("metadata", {}).get("scrapbook")
            if isinstance(meta, dict) and "name" in meta:
                key = meta.get("mime_prefix", "") + "text/plain"
                if key in data:
                    value = parse_repr(_text(data[key]))
                    if value is not None:
                        found[meta["name"]] = value
            scrap = data.get("application/scrapbook.scrap.json+json")
            if isinstance(scrap, dict) and "name" in scrap and _is_scalar(scrap.get("data")):
                found[scrap["name"]] = scrap["data"]
            record = data.get("application/papermill.record+json")
            if isinstance(record, dict):
                found.update({k: v for k, v in record.items() if _is_scalar(v)})
    return found


def notebook_row(path: Path) -> dict:
    """One row: notebook name, run time, papermill parameters, glued scalars."""
    try:
        nb = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: not a notebook ({exc})") from exc
    papermill = nb.get("metadata", {}).get("papermill", {})
    row = {"notebook": path.name, "run_time_s": papermill.get("duration")}
    parameters = papermill.get("parameters", {})
    glued = glued_scalars(nb)
    for name, value in [*parameters.items(), *glued.items()]:
        if name in row:
            raise ValueError(
                f"{path}: {name!r} is both a parameter and a glued value (or a fixed column "
                f"{FIXED_COLUMNS}); glue it under another name"
            )
        row[name] = value if _is_scalar(value) or value is None else json.dumps(value)
    return row


def collect(folder: Path | str) -> list[dict]:
    """Rows of every `*.ipynb` directly in `folder`, sorted by file name."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such folder")
    paths = sorted(folder.glob("*.ipynb"))
    if not paths:
        raise FileNotFoundError(f"{folder}: no executed notebooks (*.ipynb) in it")
    return [notebook_row(p) for p in paths]


def columns(rows: list[dict]) -> list[str]:
    """Fixed columns first, then every other name in the order first seen."""
    names = list(FIXED_COLUMNS)
    for row in rows:
        names.extend(k for k in row if k not in names)
    return names


def write_csv(rows: list[dict], path: Path | str) -> Path:
    """Write `rows` as CSV atomically (a temporary file in the same folder, then a rename)."""
    path = Path(path)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns(rows), restval="", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    text = buffer.getvalue()
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def format_table(rows: list[dict]) -> str:
    """A plain-text table, one line per notebook."""
    names = columns(rows)

    def cell(value) -> str:
        if value is None:
            return ""
        return f"{value:.4g}" if isinstance(value, float) else str(value)

    body = [[cell(row.get(n)) for n in names] for row in rows]
    widths = [max(len(n), *(len(r[i]) for r in body)) for i, n in enumerate(names)]
    lines = ["  ".join(n.ljust(w) for n, w in zip(names, widths))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths)) for r in body]
    return "\n".join(line.rstrip() for line in lines)


