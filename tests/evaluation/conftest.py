"""The shipped tiny model, once per session, for the evaluation tests (helpers: eval_testing.py)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def tiny():
    from samflow.models.sam.build import build_sam

    return build_sam("tiny", device="cpu")
