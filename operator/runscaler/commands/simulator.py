"""`runscaler simulator`: serve the GitHub simulator alone, until SIGTERM or Ctrl-C.

The first line on stdout is `simulator listening on http://HOST:PORT` (flushed at once), so a
script or test that starts it with `--listen 127.0.0.1:0` learns the port from that line.
It listens on loopback only unless `--allow-remote` says otherwise: it accepts any token.

Runners of a fleet pointed at it need the stand-in runner image (the real runner cannot talk
to the simulator): on stderr it says whether that image is built, how to build it
(`--build-runner-image` does), and that the runners need `network: host` to reach a loopback
simulator from their containers.
"""

from __future__ import annotations

import argparse
import dataclasses
import ipaddress
import os
import ssl
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from runscaler.errors import ConfigurationError, UserError
from runscaler.simulator.runner import RUNNER_IMAGE

if TYPE_CHECKING:
    from runscaler.simulator.realism import Realism
    from runscaler.simulator.server import SimulatorOptions

HELP = "run the GitHub simulator alone: try a fleet, a test or a demo without GitHub"
EXAMPLES = """\
  runscaler simulator
  runscaler simulator --listen 127.0.0.1:9000 --build-runner-image
  runscaler simulator --listen 127.0.0.1:9000 --poll-wait 5
  runscaler simulator --token s3cret --redispatch-interval 60
  runscaler simulator --habit-scale 0.1 --ghes-without-custom-labels
  runscaler simulator --ideal            # none of the live service's habits
  curl -d '{"labels": ["linux"], "count": 3, "duration": 10}' http://127.0.0.1:9000/_sim/jobs
  curl http://127.0.0.1:9000/_sim/state"""


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} must be a number of seconds >= 0")
    return value


def _span(text: str) -> tuple[float, float]:
    """`LOW-HIGH` or `SECONDS` (both ends the same); `0` turns the habit off."""
    low_text, _, high_text = text.partition("-")
    try:
        low = _seconds(low_text.strip())
        high = _seconds(high_text.strip()) if high_text else low
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a range of seconds: give LOW-HIGH (like 0.5-2) or one number"
        ) from None
    if high < low:
        raise argparse.ArgumentTypeError(f"{text!r}: the range must be LOW-HIGH with LOW <= HIGH")
    return (low, high)


def _configure_habits(parser: argparse.ArgumentParser) -> None:
    from runscaler.simulator.realism import Realism

    habits = parser.add_argument_group(
        "the live service's habits (all on by default, as on GitHub)"
    )
    habits.add_argument(
        "--ideal", action="store_true", help="turn every habit below off (an idealised GitHub)"
    )
    defaults = Realism()
    spans = (
        (
            "--start-delay",
            defaults.start_delay,
            "a runner starts its job this long after taking it",
        ),
        ("--event-delay", defaults.event_delay, "JobStarted and JobCompleted arrive this late"),
        (
            "--registration-linger",
            defaults.registration_linger,
            "a finished ephemeral runner stays registered this long",
        ),
    )
    for flag, (low, high), text in spans:
        habits.add_argument(
            flag,
            type=_span,
            default=None,
            metavar="LOW-HIGH",
            help=f"{text}; 0 turns it off (default {low:g}-{high:g})",
        )
    habits.add_argument(
        "--habit-scale",
        type=_seconds,
        default=1.0,
        metavar="X",
        help="multiply every habit's delay by X, e.g. 0.05 for tests (default 1)",
    )
    habits.add_argument(
        "--global-message-ids",
        action="store_true",
        help="number messages with one counter instead of per session (restarting near 1e8)",
    )
    habits.add_argument(
        "--apply-label-updates",
        action="store_true",
        help="apply label PATCHes (GitHub answers 200 and discards them)",
    )
    habits.add_argument(
        "--ghes-without-custom-labels",
        action="store_true",
        help="act as a GHES without DistributedTask.AllowRunnerScaleSetCustomLabels: "
        "a scale set keeps only its name as a label",
    )
    habits.add_argument("--seed", type=int, help="seed the random delays and message ids")


def realism_from(args: argparse.Namespace) -> Realism:
    """The habits the flags ask for: --ideal first, then each flag given on top."""
    from runscaler.simulator.realism import IDEAL, Realism

    base = IDEAL if args.ideal else Realism()
    changes: dict[str, object] = {"scale": args.habit_scale, "seed": args.seed}
    for name in ("start_delay", "event_delay", "registration_linger"):
        if getattr(args, name) is not None:
            changes[name] = getattr(args, name)
    if args.global_message_ids:
        changes["per_session_message_ids"] = False
    if args.apply_label_updates:
        changes["ignore_label_updates"] = False
    if args.ghes_without_custom_labels:
        changes["custom_labels"] = False
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--listen",
        default="127.0.0.1:0",
        metavar="HOST:PORT",
        help="address to serve on; port 0 picks a free port (default 127.0.0.1:0)",
    )
    parser.add_argument(
        "--tls-cert",
        type=Path,
        metavar="FILE",
        help="serve HTTPS with this PEM certificate (chain) and --tls-key, as github.com does",
    )
    parser.add_argument("--tls-key", type=Path, metavar="FILE", help="the certificate's key")
    parser.add_argument(
        "--allow-remote",
        action="store_true",
        help="allow a --listen address that is not loopback (anyone reaching it can use it)",
    )
    parser.add_argument(
        "--build-runner-image",
        action="store_true",
        help=f"build the stand-in runner image ({RUNNER_IMAGE}) first, when missing or stale",
    )
    parser.add_argument("--token", help="accept only this token (default: any non-empty token)")
    timings = (
        ("--poll-wait", 50.0, "long-poll wait of the message queue before 202"),
        ("--session-timeout", 60.0, "drop a session not polled for the poll wait plus this"),
        ("--admin-token-ttl", 3600.0, "lifetime of the Actions service admin token"),
        ("--registration-token-ttl", 3600.0, "lifetime of registration tokens"),
        ("--mq-token-ttl", 3600.0, "lifetime of message-queue tokens (then 401 until refreshed)"),
        ("--redispatch-interval", 300.0, "cancel and re-assign an acquired job nobody takes"),
        ("--runner-lost-timeout", 10.0, "fail a job whose runner has not reported this long"),
    )
    for flag, default, text in timings:
        parser.add_argument(
            flag, type=_seconds, default=default, metavar="S", help=f"{text} (default {default:g})"
        )
    parser.add_argument(
        "--app-key",
        type=Path,
        metavar="PEM_FILE",
        help="verify GitHub App JWTs against this public key (default: accept any RS256 JWT)",
    )
    parser.add_argument(
        "--log-level",
        default="info",
        choices=("debug", "info", "warning", "error"),
        help="least severe log lines shown (default: %(default)s)",
    )
    _configure_habits(parser)


def parse_listen(text: str, *, allow_remote: bool) -> tuple[str, int]:
    """`HOST:PORT` → (host, port); a non-loopback host only with `allow_remote`."""
    host, sep, port_text = text.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port_text.isdigit() or int(port_text) > 65535:
        raise ConfigurationError(f"--listen {text}: give HOST:PORT, like 127.0.0.1:9000")
    if host.lower() == "localhost":
        host = "127.0.0.1"  # one address, so port 0 means one port
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise ConfigurationError(
            f"--listen {text}: {host} is not an IP address: use 127.0.0.1 (or ::1)"
        ) from None
    if not address.is_loopback and not allow_remote:
        raise ConfigurationError(
            f"--listen {text}: {host} is not a loopback address and the simulator accepts "
            "any token: use 127.0.0.1, or add --allow-remote to serve there anyway"
        )
    return host, int(port_text)


USE_IT = (
    f"runners: in the manifest's docker section use image: {RUNNER_IMAGE}, pull: never and "
    "network: host (a runner reaches a loopback simulator only on the host's network)"
)


def runner_image_note(*, build: bool, docker: str = "docker") -> str:
    """Build the stand-in image when asked; either way, one line on whether it is there and
    how to use it (or what to do first)."""
    import subprocess

    from runscaler.simulator.runner import build_runner_image

    if build:
        try:
            build_runner_image(docker=docker)
        except UserError as exc:
            return f"runner image: {exc}"
        return f"runner image: {RUNNER_IMAGE} is built; {USE_IT}"
    try:
        probe = subprocess.run(
            [docker, "image", "inspect", "--format", "{{.Id}}", RUNNER_IMAGE],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return f"runner image: no {docker} CLI here: runners need Docker and {RUNNER_IMAGE}"
    if probe.returncode == 0:
        return f"runner image: {RUNNER_IMAGE} is present; {USE_IT}"
    if "No such image" not in probe.stderr:
        return f"runner image: cannot ask Docker about {RUNNER_IMAGE}: is the engine running?"
    return (
        f"runner image: {RUNNER_IMAGE} is not built: add --build-runner-image (needs Docker "
        f"and busybox-static); then {USE_IT}"
    )


def _read_app_key(path: Path | None) -> str | None:
    if path is None:
        return None
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigurationError(f"--app-key {path}: cannot read it: {exc.strerror}") from None
    if "-----BEGIN" not in text:
        raise ConfigurationError(f"--app-key {path}: not a PEM public key")
    return text


def _tls_context(cert: Path | None, key: Path | None) -> ssl.SSLContext | None:
    if cert is None and key is None:
        return None
    if cert is None or key is None:
        raise ConfigurationError("--tls-cert and --tls-key go together: pass both, or neither")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(certfile=cert, keyfile=key)
    except ssl.SSLError:
        raise ConfigurationError(
            f"--tls-cert {cert}, --tls-key {key}: not a PEM certificate and its unencrypted "
            "PEM key: pass the certificate (chain) and the key it was issued for"
        ) from None
    except OSError as exc:
        raise ConfigurationError(
            f"--tls-cert {cert}, --tls-key {key}: cannot read them: {exc.strerror or exc}"
        ) from None
    return context


async def _serve(
    options: SimulatorOptions, *, host: str, port: int, note: str, tls: ssl.SSLContext | None
) -> None:
    import asyncio
    import signal

    from runscaler.simulator.server import start_simulator

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        simulator = await start_simulator(options, host=host, port=port, tls=tls)
    except OSError as exc:
        where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        raise ConfigurationError(
            f"--listen {where}: cannot listen there: {os.strerror(exc.errno) if exc.errno else exc}"
        ) from None
    try:
        print(f"simulator listening on {simulator.url}", flush=True)
        print(note, file=sys.stderr, flush=True)
        await stop.wait()
    finally:
        await simulator.stop()


def main(args: argparse.Namespace) -> int:
    import asyncio

    from runscaler.logs import secrets, setup_logging
    from runscaler.simulator.server import SimulatorOptions

    host, port = parse_listen(args.listen, allow_remote=args.allow_remote)
    if args.token is not None and not args.token.strip():
        raise ConfigurationError("--token: must not be empty")
    secrets.add(args.token)
    options = SimulatorOptions(
        token=args.token,
        poll_wait=args.poll_wait,
        session_timeout=args.session_timeout,
        admin_token_ttl=args.admin_token_ttl,
        registration_token_ttl=args.registration_token_ttl,
        message_queue_token_ttl=args.mq_token_ttl,
        redispatch_interval=args.redispatch_interval,
        app_public_key=_read_app_key(args.app_key),
        runner_lost_timeout=args.runner_lost_timeout,
        realism=realism_from(args),
    )
    tls = _tls_context(args.tls_cert, args.tls_key)
    setup_logging(args.log_level)
    note = runner_image_note(build=args.build_runner_image)
    asyncio.run(_serve(options, host=host, port=port, note=note, tls=tls))
    return 0
