"""Running the method: Algorithm 1 (`train`), many runs (`runs`, `workers`, `cache`), what
they mean (`stats`, `diagnostics`) and the paper's numbers beside them (`paper`).

The names notebooks use are importable from here.
"""

from cupl.experiments.diagnostics import example_videos
from cupl.experiments.loading import Data, load_data, resolve_bank
from cupl.experiments.cache import stage1_key
from cupl.experiments.paper import paper_table
from cupl.experiments.runs import grid, make_missing, run_seeds
from cupl.experiments.stats import Verdict, best_setting, gain, mean_pm, paper_verdict, summarize, verdict
from cupl.experiments.train import RunResult, run
from cupl.experiments.workers import default_workers, prefetch
from cupl.config import RunConfig


__all__ = ["Data", "load_data", "resolve_bank", "stage1_key", "run_seeds", "make_missing", "prefetch", "default_workers", "grid",
           "summarize", "mean_pm", "gain", "verdict", "Verdict", "paper_verdict", "best_setting", "paper_table",
           "example_videos", "run", "RunConfig", "RunResult"]
