"""`cupl book`: execute the notebook chain with papermill and build the Jupyter Book."""

from __future__ import annotations

import sys
from pathlib import Path

from cupl.book.chain import find_root
from cupl.book.runner import PROFILES, BuildFailed, NotebookFailed, UnknownParameterError, run_chain
from cupl.util import parse_literal


def configure_parser(parser) -> None:
    parser.add_argument("--profile", choices=PROFILES, default="quick",
                        help="benchmark size and training budget (default: quick)")
    parser.add_argument("--bank", type=Path, default=None,
                        help="feature bank (.h5); default: the embedded synthetic benchmark")
    parser.add_argument("--seeds", type=int, default=None, help="seeds per training result")
    parser.add_argument("--device", choices=("cpu", "cuda"), default=None)
    parser.add_argument("-p", "--parameter", nargs=2, action="append", default=[],
                        metavar=("NAME", "VALUE"),
                        help="another notebook parameter (a Python literal or a string); "
                             "refused if a selected notebook does not declare it")
    parser.add_argument("--only", action="append", default=None, metavar="NN",
                        help="run only this notebook (number or name); repeatable")
    parser.add_argument("--no-build", action="store_true", help="execute, do not build")
    parser.add_argument("--force", action="store_true",
                        help="rerun every notebook and rebuild every page")
    parser.add_argument("--student", action="store_true",
                        help="build the course edition, solutions hidden, into _build/student")
    parser.add_argument("--quiet", action="store_true", help="no progress output")


def main(args) -> int:
    try:
        result = run_chain(
            find_root(Path.cwd()), profile=args.profile, bank=args.bank, seeds=args.seeds,
            device=args.device, extra={k: parse_literal(v) for k, v in args.parameter},
            only=args.only, force=args.force, build=not args.no_build, progress=not args.quiet,
            student=args.student,
        )
    except (UnknownParameterError, NotebookFailed, BuildFailed, FileNotFoundError, ValueError) as exc:
        print(f"cupl book: {exc}", file=sys.stderr)
        return 1
    executed = sum(r.status == "executed" for r in result.runs)
    total = sum(r.wall_s for r in result.runs if r.status == "executed")
    build = f", book built in {result.build_s:.1f} s" if result.build_s is not None else ""
    print(f"{executed} of {len(result.runs)} notebooks executed in {total:.1f} s{build}")
    return 0
