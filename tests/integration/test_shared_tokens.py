"""Scale sets that reach GitHub with one credential share one admin token.

A fleet of 100 scale sets on one organization used to make 100 token exchanges at start (and
100 refreshes an hour), each a registration token from GitHub's REST API: rate-limited calls
and tokens held for nothing. Sharing must stop at the credential: another token, or another
organization, gets its own exchange.
"""

from __future__ import annotations

import pytest

from runscaler.simulator.server import Simulator
from tests.integration.githubkit import add_fault, fault_hits
from tests.integration.runtimekit import TOKEN_ENV, Runtimes, scale_set
from tests.waiting import eventually

G1 = r"/actions/runners/registration-token$"
G3 = r"/actions/runner-registration$"


async def test_scale_sets_with_one_credential_exchange_it_once(
    runtimes: Runtimes, sim: Simulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTHER_TOKEN", "ghp_another_credential_0123456789")
    # Faults that change nothing: the simulator counts the requests they match.
    g1 = await add_fault(sim, method="POST", path=G1, times=-1, delay=0.001)
    g3 = await add_fault(sim, method="POST", path=G3, times=-1, delay=0.001)
    shared = [runtimes.make(scale_set(sim, name=f"pool-{i}")) for i in range(3)]
    other_token = runtimes.make(
        scale_set(
            sim,
            name="other-token",
            github={"url": sim.config_url("acme"), "auth": {"token": "env:OTHER_TOKEN"}},
        )
    )
    other_org = runtimes.make(
        scale_set(
            sim,
            name="other-org",
            github={"url": sim.config_url("globex"), "auth": {"token": f"env:{TOKEN_ENV}"}},
        )
    )
    everyone = [*shared, other_token, other_org]
    for runtime in everyone:
        runtime.start()
    await eventually(
        lambda: all(r.listener.state == "listening" for r in everyone),
        timeout=20,
        message="every scale set listening",
    )
    # One exchange for the three that share a credential, one each for the other two.
    assert (await fault_hits(sim, g1), await fault_hits(sim, g3)) == (3, 3)
