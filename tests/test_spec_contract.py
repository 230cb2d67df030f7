"""The spec contract, as a property: every spec that validates builds and runs; every spec that
does not gets a plain error at a spec path.

Specs are drawn from every registered example (architectures, components in their host,
objectives on theirs) with one to three mutations each, plausible or invalid (see
:mod:`vitzoo.testing.contract`). ``VITZOO_SPEC_EXAMPLES`` sets how many (default 200; the issue's
bar is 5000). A failure is shrunk by hypothesis and printed as the minimal spec in YAML.
``VITZOO_SPEC_STATS=path.json`` writes the accept/reject counts there.
"""

from __future__ import annotations

import collections
import json
import os

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, event, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from vitzoo.testing.contract import MUTATIONS, check_contract, leaf_paths, mutate  # noqa: E402
from vitzoo.testing.variants import plugin_system, variants  # noqa: E402

EXAMPLES = int(os.environ.get("VITZOO_SPEC_EXAMPLES", "200"))
SYSTEM = plugin_system()
BASES = sorted(
    ((v.id, v.tiny_spec_data()) for v in variants(system=SYSTEM) if v.kind != "preset"),
    key=lambda item: item[0],
)
COUNTS: collections.Counter[str] = collections.Counter()


@pytest.fixture(scope="module", autouse=True)
def _report_counts():
    yield
    target = os.environ.get("VITZOO_SPEC_STATS")
    if target:
        with open(target, "w", encoding="utf-8") as f:
            json.dump(dict(COUNTS), f, indent=2)


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=EXAMPLES <= 200,  # the normal run is reproducible; big runs explore
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    database=None,
)
@given(st.data())
def test_every_spec_validates_and_runs_or_gets_a_plain_error(data) -> None:
    name, spec = data.draw(st.sampled_from(BASES), label="example")
    for _ in range(data.draw(st.integers(1, 3), label="mutations")):
        paths = leaf_paths(spec)
        if not paths:
            break
        path = data.draw(st.sampled_from(paths), label="path")
        mutation = data.draw(st.sampled_from(MUTATIONS), label="mutation")
        choice = data.draw(st.integers(0, 10**6), label="choice")
        spec = mutate(spec, path, mutation, choice, SYSTEM.registry)
    outcome = check_contract(SYSTEM, spec)
    COUNTS[outcome.status] += 1
    event(outcome.status)


def test_unmutated_examples_are_accepted() -> None:
    """The starting points themselves must validate (else the mutations test nothing)."""
    for name, spec in BASES:
        assert check_contract(SYSTEM, spec).status != "rejected", name
