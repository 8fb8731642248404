"""The `cupl` command: one module per subcommand, each with `configure_parser(parser)` and
`main(args) -> int`; this file only routes."""

from __future__ import annotations

import argparse
import importlib
import sys

COMMANDS = {
    "synth": ("cupl.cli.synth", "write an embedded synthetic benchmark bank (.h5)"),
    "import": ("cupl.cli.importer", "import real I3D / VGGish features into a bank"),
    "train": ("cupl.cli.train", "run the two-stage method on a bank"),
    "evaluate": ("cupl.cli.evaluate", "evaluate a stage-2 checkpoint (cupl or official) on a bank"),
    "book": ("cupl.cli.book", "execute the notebook chain with papermill and build the book"),
    "collect": ("cupl.cli.collect", "gather glued results of executed notebooks into one table"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cupl", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        module = importlib.import_module(module_name)
        module.configure_parser(p)
        p.set_defaults(_module=module)
    return parser


def main(argv: list[str] | None = None) -> int:
    from cupl.files import OutputError

    args = build_parser().parse_args(argv)
    try:
        return int(args._module.main(args) or 0)
    except OutputError as err:   # an output refused or a full disk: one line naming the file
        print(f"cupl {args.command}: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
