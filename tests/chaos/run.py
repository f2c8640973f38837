"""Run seeded chaos against the real operator: `python -m tests.chaos [--seed N] [--minutes M]`.

One seed is a list of scenarios (`scenario.py`). Each scenario has a window in which jobs flow
and its events happen at their planned offsets; then every fault is cleared, the base fleet is
committed again, and the harness waits for the fleet to converge (every job done, a session
per scale set, exactly the warm runners and no dead containers). After the last scenario the
operator gets SIGTERM and whatever it left on the engine is counted. Exits 1 on any loss.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from runscaler.simulator.server import SimulatorOptions, serve_simulator
from tests.chaos.accounting import (
    Figures,
    churn,
    duplicate_containers,
    job_figures,
    log_findings,
)
from tests.chaos.engine import ChaosEngine
from tests.chaos.observe import ContainerEvents, Sampler
from tests.chaos.report import SeedReport, print_report
from tests.chaos.scenario import LONG, SHORT, Profile, Scenario, plan, scaled
from tests.chaos.world import OWNER, World

SIM_OPTIONS = SimulatorOptions(
    poll_wait=5.0, session_timeout=30.0, redispatch_interval=60.0, runner_lost_timeout=5.0
)
DEFAULT_SEEDS = (1, 2, 3)


class Run:
    """One seed's run in a world that exists for it alone."""

    def __init__(
        self, world: World, events: ContainerEvents, sampler: Sampler, out: Callable[[str], None]
    ) -> None:
        self.world = world
        self.events = events
        self.sampler = sampler
        self.out = out
        self.jobs: dict[int, list[int]] = {}  # scenario index → job ids
        self.scale_set_of: dict[int, str] = {}
        self._logged = (0, 0)
        # Dead containers a scenario already reported as not converging: later scenarios are
        # judged without them, so one leak is one loss and not a loss in every scenario after.
        self.reported: set[str] = set()
        self.dead: list[str] = []

    def say(self, text: str) -> None:
        self.out(f"[{time.strftime('%H:%M:%S')}] {text}")

    async def feed(self, scenario: Scenario, start: float) -> None:
        ids = self.jobs.setdefault(scenario.index, [])
        for arrival in scenario.jobs:
            await asyncio.sleep(max(0.0, start + arrival.at - time.monotonic()))  # the plan's clock
            [job_id] = self.world.sim.add_jobs([arrival.scale_set], duration=arrival.duration)
            ids.append(job_id)
            self.scale_set_of[job_id] = arrival.scale_set

    async def chaos(self, scenario: Scenario, start: float) -> None:
        for event in scenario.events:
            await asyncio.sleep(max(0.0, start + event.at - time.monotonic()))
            self.world.check_operator()
            late = time.monotonic() - start
            note = await self.world.perform(event)
            self.say(f"  {scenario.name} +{late:5.1f}s {note}")

    def unconverged(self, scenario: Scenario) -> str | None:
        """Why the fleet is not where the base manifest says, or None once it is."""
        world = self.world
        world.check_operator()
        state = world.sim.state
        open_jobs = [j for ids in self.jobs.values() for j in ids if state.jobs[j].state != "done"]
        if open_jobs:
            return f"{len(open_jobs)} job(s) not done (first: {open_jobs[0]})"
        on_github = {s.name: s.id for s in state.scale_sets.values()}
        for shape in scenario.base:
            scale_set_id = on_github.get(shape.name)
            session = None if scale_set_id is None else state.active_session(scale_set_id)
            if session is None or session.owner != OWNER:
                return f"{shape.name} has no session of ours"
        containers = [
            c for c in world.engine.containers(world.fleet) if c["name"] not in self.reported
        ]
        dead = [c for c in containers if c["state"] != "running"]
        if dead:
            self.dead = [c["name"] for c in dead]
            return "containers not running: " + ", ".join(
                f"{c['name']} ({c['state']})" for c in dead
            )
        for shape in scenario.base:
            count = sum(c["scale_set"] == shape.name for c in containers)
            if count != shape.min_runners:
                return f"{shape.name} has {count} runner(s), minRunners is {shape.min_runners}"
        return None

    async def settle(self, scenario: Scenario, within: float) -> tuple[float | None, str]:
        """Seconds until the fleet converged after the faults cleared (None: not in time),
        and the last reason it had not."""
        cleared = time.monotonic()
        why = "not checked"
        self.dead = []
        while time.monotonic() - cleared < within:
            try:
                why = await asyncio.to_thread(self.unconverged, scenario) or ""
            except RuntimeError as exc:
                why = str(exc)  # the engine is not answering yet
            if not why:
                return time.monotonic() - cleared, ""
            await asyncio.sleep(1.0)  # the convergence poll
        self.reported.update(self.dead)
        return None, why

    async def scenario(self, scenario: Scenario, settle_timeout: float) -> Figures:
        self.say(
            f"scenario {scenario.name}: {scenario.window:.0f}s, "
            f"{len(scenario.jobs)} jobs, {len(scenario.events)} events"
        )
        start = time.monotonic()
        first_operator = len(self.world.operators) - 1
        feeder = asyncio.create_task(self.feed(scenario, start))
        await self.chaos(scenario, start)
        await asyncio.sleep(max(0.0, start + scenario.window - time.monotonic()))
        await feeder
        await self.world.clear(scenario.base)
        converge, why = await self.settle(scenario, settle_timeout)
        figures = Figures(converge=converge, unconverged=int(converge is None))
        if converge is None:
            figures.details.append(
                f"{scenario.name} did not converge in {settle_timeout:.0f}s: {why}"
            )
            self.say(f"  {scenario.name} did NOT converge within {settle_timeout:.0f}s: {why}")
        else:
            self.say(f"  {scenario.name} converged after {converge:.1f}s")
        tracebacks, secrets, found = log_findings(
            self.world.log_text(), {self.world.token, *self.sampler.credentials}
        )
        figures.tracebacks = tracebacks - self._logged[0]
        figures.secrets = max(0, secrets - self._logged[1])
        if figures.secrets:
            figures.details.extend(found)
        self.say(f"  {scenario.name} tracebacks so far {tracebacks}, secrets {secrets}")
        self._logged = (tracebacks, secrets)
        pids = [p.pid for p in self.world.operators[first_operator:]]
        figures.peak_rss_mib = (
            max((self.sampler.peak_rss.get(p, 0) for p in pids), default=0) / 1024
        )
        return figures


async def run_seed(
    seed: int,
    profile: Profile,
    *,
    settle_timeout: float,
    out: Callable[[str], None] = print,
    keep_logs: bool = False,
) -> SeedReport:
    scenarios = plan(seed, profile)
    report = SeedReport(seed=seed)
    root = Path(tempfile.mkdtemp(prefix="runscaler-chaos-"))
    engine = ChaosEngine.create()
    try:
        await asyncio.to_thread(engine.start)
        await asyncio.to_thread(engine.build_runner_image)
        async with serve_simulator(SIM_OPTIONS) as sim:
            world = World(sim=sim, engine=engine, root=root)
            events = ContainerEvents(engine, world.fleet)
            sampler = Sampler(sim)
            world.sampler = sampler
            run = Run(world, events, sampler, out)
            run.say(
                f"seed {seed}: {len(scenarios)} scenarios, fleet {world.fleet}, "
                f"engine {engine.host}"
            )
            await world.create(scenarios[0].base)
            events.start()
            sampling = asyncio.create_task(sampler.run())
            try:
                world.start_operator()
                await world.operator.wait_ready(timeout=60)
                per_scenario: list[tuple[str, Figures]] = []
                for scenario in scenarios:
                    per_scenario.append(
                        (scenario.name, await run.scenario(scenario, settle_timeout))
                    )
                code = await world.stop_operator()
                if code not in (0, None):
                    world.findings.append(f"the final SIGTERM ended the operator with {code}")
                await asyncio.sleep(1.0)  # let the engine's last events arrive
                sampler.sample()
                leftovers = await asyncio.to_thread(engine.containers, world.fleet)
                report.containers_left = len(leftovers)
                report.volumes_left = len(await asyncio.to_thread(engine.volumes, world.fleet))
                for name, figures in per_scenario:
                    index = int(name.split(":")[0]) - 1
                    jobs = job_figures(
                        run.jobs.get(index, []),
                        sim=sim,
                        events=events,
                        ledger=world.ledger,
                        sampler=sampler,
                        scale_set_of=run.scale_set_of,
                    )
                    for attr in (
                        "tracebacks",
                        "secrets",
                        "unconverged",
                        "converge",
                        "peak_rss_mib",
                    ):
                        setattr(jobs, attr, getattr(figures, attr))
                    jobs.details.extend(figures.details)
                    report.scenarios.append((name, jobs))
                report.runner_starts, report.removed_within_3s = churn(events, sampler)
                report.findings.extend(world.findings)
                report.notes.extend(world.notes)
                report.findings.extend(duplicate_containers(events))
                report.findings.extend(
                    f"left after shutdown: {c['name']} ({c['state']})" for c in leftovers
                )
                if keep_logs:
                    copy_logs(world, seed)
            finally:
                sampling.cancel()
                await events.stop()
                world.kill_all()
                engine.remove_fleet(world.fleet)
    finally:
        await asyncio.to_thread(engine.destroy)
        shutil.rmtree(root, ignore_errors=True)
    return report


def copy_logs(world: World, seed: int) -> None:
    """Keep the operators' logs of the seed for reading after the run (the standalone entry
    prints where)."""
    target = Path(tempfile.gettempdir()) / f"runscaler-chaos-seed-{seed}.log"
    target.write_text(world.labelled_logs())
    print(f"operator logs of seed {seed}: {target}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.chaos", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "--seed", type=int, action="append", help="replay this seed (repeatable; default 1 2 3)"
    )
    parser.add_argument(
        "--minutes", type=float, default=4.0, help="chaos minutes per seed (default 4)"
    )
    parser.add_argument("--short", action="store_true", help="the short profile of `make test`")
    parser.add_argument(
        "--settle", type=float, default=None, help="seconds to wait for convergence"
    )
    args = parser.parse_args(argv)
    from tests.chaos.guard import install_guard

    guard_log = install_guard()
    profile = SHORT if args.short else scaled(LONG, args.minutes)
    settle = args.settle or (60.0 if args.short else 150.0)
    reports = [
        asyncio.run(run_seed(seed, profile, settle_timeout=settle, keep_logs=True))
        for seed in args.seed or DEFAULT_SEEDS
    ]
    print_report(reports)
    violations = guard_log.read_text()
    guard_log.unlink()
    if violations:
        print(f"LOSS connections to non-loopback addresses:\n{violations}")
    return 1 if violations or any(r.losses for r in reports) else 0


if __name__ == "__main__":
    sys.exit(main())
