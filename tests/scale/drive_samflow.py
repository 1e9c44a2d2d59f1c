"""`samflow ARGS`, for tests that signal a run: with the test nodes registered (`testing.slow_copy`) and, when
SAMFLOW_TESTING_ANNOTATE_SECONDS is set, every image of `samflow annotate` slowed down by that many seconds.
Test-only: nothing of this ships."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import scale_testing  # noqa: E402,F401  (registers the test nodes)

from samflow.cli import main  # noqa: E402

if os.environ.get("SAMFLOW_TESTING_ANNOTATE_SECONDS"):
    from samflow.scale import annotate

    pause = float(os.environ["SAMFLOW_TESTING_ANNOTATE_SECONDS"])
    annotate_one = annotate.annotate_one

    def slow_annotate_one(*args, **kwargs):
        time.sleep(pause)
        return annotate_one(*args, **kwargs)

    annotate.annotate_one = slow_annotate_one

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
