"""The book from a fresh clone, install included, then again after one chapter's parameter changes.

Clones this repository's HEAD into an empty folder and times, one after the other:

1. `make install`: the virtual environment and the package (torch as the Makefile chooses it);
2. `make book`: the notebook chain at the default profile, then the book build, with the run
   cache of the clone (empty: every run is made);
3. `make book BOOK_ARGS="--only NN -p NAME VALUE"`: one chapter rerun with one parameter
   changed, everything else reused, and the book built again.

The change of step 3 is fixed here, before any measurement: chapter 4's `check_clips` (how many
clips check the exact MC-Dropout path) from its default to 1000. It trains nothing, so step 3
measures what a rerun costs beyond a chapter's own new runs: the runner, the chapter's
evaluation and plots, and the book build. `--change` names another.

After every step the numbers so far are written to `--json` (atomically), with `"complete":
false` until the last step has ended; a step that fails stops the script with its log named.

    python benchmarks/fresh_book.py --json benchmarks/results/fresh_book.json
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cupl.book.performance import chain_runs, write_result  # noqa: E402

CHANGE = ("04", "check_clips", "1000")


def step(name: str, command: list[str], folder: Path, numbers: dict) -> float:
    """Run `command` in `folder`, its output into `folder/<name>.log`; its seconds."""
    log = folder / f"{name}.log"
    print(f"{name}: {shlex.join(command)}", flush=True)
    start = time.perf_counter()
    with open(log, "w") as out:
        done = subprocess.run(command, cwd=folder, stdout=out, stderr=subprocess.STDOUT)
    seconds = time.perf_counter() - start
    if done.returncode:
        numbers["failed"] = f"{name} exited with {done.returncode}; see {log}"
        raise SystemExit(f"{name} failed ({done.returncode}) after {seconds:.0f} s; see {log}")
    print(f"{name}: {seconds:.1f} s", flush=True)
    return seconds


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dir", help="an empty or missing folder to clone into (default: a new temporary one)")
    p.add_argument("--change", nargs=3, metavar=("NN", "NAME", "VALUE"), default=CHANGE,
                   help=f"chapter, parameter and value of step 3 (default: {' '.join(CHANGE)})")
    p.add_argument("--json", help="write the numbers here")
    args = p.parse_args(argv)
    folder = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="cupl-fresh-"))
    if folder.exists() and any(folder.iterdir()):
        p.error(f"--dir {folder}: not empty")
    load_before = os.getloadavg()
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                            check=True).stdout.strip()
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(folder)], check=True)
    chapter, name, value = args.change
    numbers = {"commit": commit, "folder": str(folder), "complete": False,
               "change": {"chapter": chapter, "parameter": name, "value": value}}

    def save():
        if args.json:
            write_result(args.json, numbers, load_before=load_before)

    try:
        numbers["install_s"] = step("install", ["make", "install"], folder, numbers)
        save()
        numbers["book_s"] = step("book", ["make", "book"], folder, numbers)
        numbers["fresh_s"] = numbers["install_s"] + numbers["book_s"]
        runs = chain_runs(folder, skip=())
        numbers["chain_s"] = sum(r["seconds"] or 0.0 for r in runs)
        numbers["profiles"] = sorted({r["profile"] for r in runs if r["profile"]})
        save()
        numbers["rerun_s"] = step("rerun", ["make", "book", f"BOOK_ARGS=--only {chapter} -p {name} {value}"],
                                  folder, numbers)
        numbers["complete"] = True
    finally:
        save()
    print(f"fresh clone: install {numbers['install_s']:.0f} s + book {numbers['book_s']:.0f} s "
          f"= {numbers['fresh_s'] / 60:.1f} min; rerun after {name} = {value} in chapter {chapter}: "
          f"{numbers['rerun_s']:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
