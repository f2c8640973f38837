"""Start and stop the simulator: `serve_simulator()` in tests, `start_simulator()` for the CLI.

    async with serve_simulator(SimulatorOptions(poll_wait=0.5)) as sim:
        github_url = sim.config_url("acme")        # http://127.0.0.1:PORT/acme
        sim.add_jobs(["linux"], count=3, duration=1)
        ...sim.state.snapshot()...

Stopping ends waiting long polls at once (202, `state=waiting`), so clients see a clean end.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import AsyncIterator, Sequence

from aiohttp import web

from runscaler.simulator.app import build_app
from runscaler.simulator.core import Core, SimulatorOptions
from runscaler.simulator.state import SimState

__all__ = ["Simulator", "SimulatorOptions", "serve_simulator", "start_simulator"]

log = logging.getLogger(__name__)

DEFAULT_OPTIONS = SimulatorOptions()
# Connections still open this long after stop are closed anyway.
_SHUTDOWN_TIMEOUT = 2.0


class Simulator:
    """A running simulator: its URL, its state for assertions, and `stop()`."""

    def __init__(self, *, core: Core, url: str, runner: web.AppRunner) -> None:
        self.url = url
        self.options = core.options
        self._core = core
        self._runner = runner
        self._clock = asyncio.create_task(core.run_clock(), name="simulator-clock")
        self._stopped = False

    @property
    def state(self) -> SimState:
        return self._core.state

    def config_url(self, org: str = "acme", repo: str | None = None) -> str:
        """A manifest's `github.url` for this simulator (`enterprises/SLUG` works as `org`)."""
        return f"{self.url}/{org}" if repo is None else f"{self.url}/{org}/{repo}"

    def add_jobs(
        self,
        labels: Sequence[str],
        *,
        count: int = 1,
        duration: float = 0.0,
        result: str = "succeeded",
        repository: str | None = None,
    ) -> list[int]:
        """Enqueue jobs in process (same as `POST /_sim/jobs`); waiting clients are woken."""
        ids = self._core.state.add_jobs(
            labels,
            count=count,
            duration=duration,
            result=result,
            repository=repository,
            now=self._core.now(),
        )
        self._core.changed()
        return ids

    async def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        self._core.closing = True
        self._core.changed()
        self._clock.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._clock
        await self._runner.cleanup()
        log.info("simulator at %s stopped", self.url)


def _url(host: str, port: int, scheme: str = "http") -> str:
    return f"{scheme}://[{host}]:{port}" if ":" in host else f"{scheme}://{host}:{port}"


async def start_simulator(
    options: SimulatorOptions = DEFAULT_OPTIONS,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    tls: ssl.SSLContext | None = None,
) -> Simulator:
    """Bind and serve (HTTPS with `tls`, as github.com is); the caller must `stop()` it."""
    core = Core(options)
    runner = web.AppRunner(build_app(core), access_log=None, shutdown_timeout=_SHUTDOWN_TIMEOUT)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port, ssl_context=tls)
        await site.start()
        bound = runner.addresses[0][1]
    except BaseException:
        await runner.cleanup()
        raise
    url = _url(host, bound, "https" if tls else "http")
    core.state.base_url = url
    log.info("simulator listening on %s", url)
    return Simulator(core=core, url=url, runner=runner)


@contextlib.asynccontextmanager
async def serve_simulator(
    options: SimulatorOptions = DEFAULT_OPTIONS,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
) -> AsyncIterator[Simulator]:
    simulator = await start_simulator(options, host=host, port=port)
    try:
        yield simulator
    finally:
        await simulator.stop()
