"""Benchmark: a runner's start from a Tart warm pool, against a cold start (clone and boot).

Both sides run in one process run on the fake `tart` (tests/faketart/tart, which keeps real VM
directories and runs the guest's commands for real), on a TART_HOME of its own, with the boot
costs a real Mac shows in proportion: a clone of `--clone-delay` seconds and a guest agent that
answers `--agent-after` seconds after boot. Cold: `TartBackend.start()` with no pool (clone,
configure, boot, wait for the agent, hand over the JIT config). Warm: the same call on a scale
set with `poolSize: 1`, once its pool holds a booted VM (the refill is not timed). Rounds
alternate the sides; medians are compared.

    python bench/tart_pool.py [--rounds 3] [--clone-delay 1] [--agent-after 4] [--quick]

The last line is `tart pickup (warm pool): T s (ratio R vs cold start C s)`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "operator")]

from tests.integration.tartkit import FAKE_DIR, IMAGE, FakeTart, tart_spec  # noqa: E402
from tests.waiting import eventually  # noqa: E402

from runscaler.backends.base import LABEL_FLEET, LABEL_SCALE_SET_KEY  # noqa: E402
from runscaler.backends.tart import TartBackend, TartTiming  # noqa: E402

FLEET = "benchfleet"
KEY = "aaaaaaaaaaaa"


async def cold_start(backend: TartBackend, name: str) -> float:
    began = time.monotonic()
    await backend.start(tart_spec(name, fleet=FLEET, key=KEY))
    elapsed = time.monotonic() - began
    await backend.remove(name)
    return elapsed


async def warm_start(backend: TartBackend, name: str) -> float:
    backend.register(KEY, tart_spec(name, fleet=FLEET, key=KEY, poolSize=1).template)
    exits = backend.exits({LABEL_FLEET: FLEET, LABEL_SCALE_SET_KEY: KEY})
    try:
        pool = backend._pools[KEY]
        await eventually(lambda: bool(pool.ready), timeout=120, message="a booted pool VM")
        began = time.monotonic()
        await backend.start(tart_spec(name, fleet=FLEET, key=KEY, poolSize=1))
        elapsed = time.monotonic() - began
        await backend.remove(name)
    finally:
        await exits.aclose()  # the scale set stops: its pool's VMs go
    await eventually(lambda: not backend.slots.in_use, timeout=60, message="the pool's VMs gone")
    return elapsed


async def main(args: argparse.Namespace) -> None:
    home = Path(tempfile.mkdtemp(prefix="runscaler-bench-tart-"))
    os.environ["TART_HOME"] = str(home)
    os.environ["PATH"] = f"{FAKE_DIR}{os.pathsep}{os.environ.get('PATH', '')}"
    os.environ["FAKE_TART_IMAGES"] = IMAGE
    fake = FakeTart(home)
    script = home / "runner.sh"
    script.write_text("#!/bin/sh\nexec sleep 300\n")  # a runner waiting for its job
    script.chmod(0o755)
    fake.control(
        CLONE_DELAY=args.clone_delay, AGENT_READY_AFTER=args.agent_after, RUNNER_SCRIPT=str(script)
    )
    backend = TartBackend(fleet=FLEET, timing=TartTiming(poll=0.1, pool_backoff=0.2))
    cold: list[float] = []
    warm: list[float] = []
    try:
        for round_ in range(args.rounds):
            sides = [("cold", cold_start, cold), ("warm", warm_start, warm)]
            for side, run, times in sides if round_ % 2 == 0 else sides[::-1]:
                times.append(await run(backend, f"{side}-{round_}"))
                print(f"round {round_ + 1}: {side} {times[-1]:.2f}s", flush=True)
    finally:
        await backend.close()
        fake.kill_everything()
        shutil.rmtree(home, ignore_errors=True)
    warm_p50, cold_p50 = statistics.median(warm), statistics.median(cold)
    print(json.dumps({"cold": cold, "warm": warm}))
    print(
        f"tart pickup (warm pool): {warm_p50:.2f} s (ratio {warm_p50 / cold_p50:.2f} vs cold "
        f"start {cold_p50:.2f} s)"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--clone-delay", type=float, default=1.0)
    parser.add_argument("--agent-after", type=float, default=4.0)
    parser.add_argument("--quick", action="store_true", help="one round")
    parsed = parser.parse_args()
    if parsed.quick:
        parsed.rounds = 1
    asyncio.run(main(parsed))
