"""Every internal wait of the engine in one place, scalable for tests and demos.

Production values follow GitHub's behaviour and the peers' experience (backoff capped at a
minute, a 30 s resync under the event stream). `scaled_timing(0.05)` shrinks them all so an
end-to-end test sees a crash-loop backoff or a reconnect in a fraction of a second.
"""

from __future__ import annotations

from runscaler.engine.listener import ListenerTiming
from runscaler.engine.scaler import ScalerTiming
from runscaler.engine.scaleset import RuntimeTiming
from runscaler.github.client import RetryPolicy


def scaled_timing(scale: float = 1.0) -> RuntimeTiming:
    def s(value: float) -> float:
        return value * scale

    return RuntimeTiming(
        listener=ListenerTiming(
            backoff_initial=s(1.0),
            backoff_max=s(60.0),
            standby_initial=s(5.0),
            standby_max=s(30.0),
        ),
        scaler=ScalerTiming(
            crash_backoff_initial=s(2.0),
            crash_backoff_max=s(120.0),
            finished_grace=s(60.0),
            resync_interval=s(30.0),
            backend_retry=s(5.0),
            completion_hold=s(30.0),
            exit_grace=s(30.0),
            manifest_scale=scale,
            cleanup_limit=s(10.0) if scale >= 1 else 10.0,
        ),
        retry=RetryPolicy(attempts=5, wait_min=s(1.0), wait_max=s(30.0)),
        restart_initial=s(1.0),
        restart_max=s(60.0),
        delete_retry=s(5.0),
        # Bounds, not waits: scaled, but never below what a healthy engine needs.
        shutdown_deadline=max(5.0, s(20.0)),
        delete_deadline=max(5.0, s(60.0)),
    )
