"""FHIRPath invariants evaluated by concurrent requests give the verdicts they give one at a time.

fhirpathpy resets module-global state (the instant ``now()`` returns) at the start of every evaluation, so an
evaluation that runs while another one is under way sees its state change: ``now() = now()`` turns false. The
invariants go through :mod:`fhir_common.fhirpath`, which runs one evaluation at a time."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from profiles.invariants import NATIVE, Invariant, compile_invariant
from profiles.model import definitions

from .conftest import SHARED, load

# One instant per evaluation (fhirpath spec: now() is constant within an expression); data is read in between.
NOW = compile_invariant("now-1", "error", "now() is one instant per evaluation",
                        "now() = iif(active.exists(), now(), now())")


def _later_evaluation() -> None:
    time.sleep(0.002)  # fhirpathpy's now() has millisecond precision: the other evaluation's instant must differ
    assert NOW.check is not None
    NOW.check({"resourceType": "Patient"}, {})


class _Interleaved(dict[str, Any]):
    """A resource whose ``active`` element, when read, lets another thread validate a resource first (as the
    scheduler may do between any two steps), waiting for it at most ``patience_s``."""

    patience_s = 2.0

    def get(self, key: str, default: Any = None) -> Any:
        if key == "active":
            other = threading.Thread(target=_later_evaluation)
            other.start()
            other.join(self.patience_s)  # with the adapter's lock the other waits for this evaluation to end
        return super().get(key, default)


def test_an_evaluation_does_not_see_another_one_that_runs_meanwhile() -> None:
    assert NOW.check is not None
    alone = {"resourceType": "Patient"}
    assert NOW.check(alone, alone)
    meanwhile = _Interleaved(resourceType="Patient")
    assert NOW.check(meanwhile, meanwhile)


def _fhirpath_invariants() -> list[Invariant]:
    """The vendored R4 invariants that run through fhirpathpy (not natively), plus now-1 (none of them reads the
    clock, so without it the race is there but shows in no verdict)."""
    seen: dict[str, Invariant] = {"now-1": NOW}
    for model in definitions().models.values():
        for inv in model.invariants:
            if inv.check is not None and inv.key not in NATIVE:
                seen.setdefault(inv.key, inv)
    return list(seen.values())


@pytest.fixture
def busy_scheduler() -> Iterator[None]:
    """Threads switch every microsecond instead of every 5 ms: interleavings that are rare become common."""
    before = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(before)


def test_concurrent_invariant_evaluation_gives_the_sequential_verdicts(busy_scheduler: None) -> None:
    invariants = _fhirpath_invariants()
    resources = [load(p) for t in ("Patient", "Immunization", "DocumentReference", "List")
                 for p in sorted((SHARED / "r4-examples").glob(f"{t}-*.json"))[:4]]
    resources += [{**r, "active": True} for r in resources if r["resourceType"] == "Patient"]
    assert len(invariants) > 5 and len(resources) > 10

    def verdicts(_round: int) -> list[bool]:
        return [inv.check(r, r) for r in resources for inv in invariants if inv.check is not None]

    sequential = verdicts(0)
    with ThreadPoolExecutor(max_workers=8) as pool:
        concurrent = list(pool.map(verdicts, range(32)))
    assert [i for i, v in enumerate(concurrent) if v != sequential] == []
