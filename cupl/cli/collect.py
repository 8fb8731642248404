"""`cupl collect DIR`: one table from a folder of executed notebooks."""

from __future__ import annotations

import sys
from pathlib import Path

from cupl.book.collect import collect, format_table, write_csv


def configure_parser(parser) -> None:
    parser.add_argument("folder", type=Path, help="folder of executed notebooks (papermill outputs)")
    parser.add_argument("--csv", type=Path, default=None, help="also write the table to this CSV file")


def main(args) -> int:
    try:
        rows = collect(args.folder)
    except (FileNotFoundError, ValueError) as exc:
        print(f"cupl collect: {exc}", file=sys.stderr)
        return 1
    print(format_table(rows))
    if args.csv is not None:
        print(f"wrote {write_csv(rows, args.csv)}")
    return 0
