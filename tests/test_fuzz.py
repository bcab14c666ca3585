"""A bounded fuzz run: lying files (valid checksums) and damaged ones, through every reader
path; no foreign exception, no file the two readers decode differently. The long run is
bench/fuzz_bench.py; a failure either finds is kept in tests/data/fuzz_regressions/."""

from __future__ import annotations

import random

import pytest

import fuzzlib

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402

SEEDS = fuzzlib.seeds()


@settings(max_examples=400, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(seed=st.sampled_from(sorted(SEEDS)), lie=st.booleans(), n=st.integers(0, 2**32))
def test_lies_and_damage_are_refused_or_read_exactly(seed, lie, n) -> None:
    rng = random.Random(n)
    what, data = (fuzzlib.lie if lie else fuzzlib.damage)(SEEDS[seed], rng)
    outcome = fuzzlib.run_case(data)
    assert outcome.verdict in ("typed", "accepted"), (seed, what, outcome.detail)
    if not lie:
        assert outcome.verdict == "typed" or data == SEEDS[seed], what  # damage never slips through
