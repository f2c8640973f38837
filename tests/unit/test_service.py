"""`runscaler service`: the rendered systemd unit and launchd plist, checked by the real
`systemd-analyze verify` where it is installed; install/uninstall against a temp unit directory
with a stand-in `systemctl` on PATH (the machine's real systemd is never touched)."""

from __future__ import annotations

import os
import plistlib
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from runscaler.cli import run
from runscaler.servicing import LAUNCHD_PATH

EXAMPLE = Path(__file__).parents[2] / "examples" / "single-org-docker.yaml"
SYSTEMD_ANALYZE = shutil.which("systemd-analyze")


def dry_run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[str, str]:
    code = run(["service", "install", "--dry-run", "--manifest", str(EXAMPLE), *argv])
    out, err = capsys.readouterr()
    assert code == 0, err
    return out, err


def _unit(text: str) -> dict[str, list[str]]:
    keys: dict[str, list[str]] = {}
    for line in text.splitlines():
        if "=" in line and not line.startswith("#"):
            key, _, value = line.partition("=")
            keys.setdefault(key, []).append(value)
    return keys


def test_the_system_unit_runs_the_manifest_and_reads_tokens_from_the_env_file(
    capsys: pytest.CaptureFixture[str],
) -> None:
    out, err = dry_run(capsys, "--env-file", "/etc/runscaler/acme.env")

    unit = _unit(out)
    exec_start = unit["ExecStart"][0].split()
    assert exec_start[1:] == [
        "run",
        str(EXAMPLE),
        "--listen",
        "127.0.0.1:8080",
        "--state-dir",
        "/var/lib/runscaler",
    ]
    assert Path(exec_start[0]).name == "runscaler" and Path(exec_start[0]).is_absolute()
    assert unit["EnvironmentFile"] == ["/etc/runscaler/acme.env"]
    assert unit["After"] == ["network-online.target docker.service"]
    assert unit["Wants"] == ["network-online.target docker.service"]
    assert unit["Restart"] == ["on-failure"]
    assert unit["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert unit["KillMode"] == ["mixed"]  # SIGTERM to the operator only: busy runners stay
    assert unit["ProtectSystem"] == ["full"] and unit["NoNewPrivileges"] == ["yes"]
    assert unit["ReadWritePaths"] == ["/var/lib/runscaler"]
    assert "AF_UNIX" in unit["RestrictAddressFamilies"][0]  # the Docker socket
    assert unit["WantedBy"] == ["multi-user.target"]
    assert err.splitlines()[:3] == [
        "would write /etc/systemd/system/runscaler.service",
        "would run: systemctl daemon-reload",
        "would run: systemctl enable --now runscaler",
    ]


def test_a_user_unit_has_no_system_ordering_or_sandbox(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))

    out, err = dry_run(capsys, "--user", "--name", "acme")

    unit = _unit(out)
    assert unit["EnvironmentFile"] == [str(tmp_path / "config/runscaler/acme.env")]
    assert unit["ExecStart"][0].endswith(f"--state-dir {tmp_path / 'state/runscaler'}")
    assert "docker.service" not in out
    assert "ProtectSystem" not in unit
    assert unit["WantedBy"] == ["default.target"]
    assert f"would write {tmp_path / 'config/systemd/user/acme.service'}" in err
    assert "would run: systemctl --user enable --now acme" in err


def test_paths_with_spaces_and_percent_signs_are_quoted(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    manifest = tmp_path / "my fleet" / "100%.yaml"

    out, _ = run_dry(capsys, "--manifest", str(manifest))

    assert f'"{tmp_path}/my fleet/100%%.yaml"' in _unit(out)["ExecStart"][0]
    assert _unit(out)["WorkingDirectory"] == [f'"{tmp_path}/my fleet"']


def run_dry(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[str, str]:
    code = run(["service", "install", "--dry-run", *argv])
    out, err = capsys.readouterr()
    assert code == 0, err
    return out, err


@pytest.mark.skipif(SYSTEMD_ANALYZE is None, reason="systemd-analyze is not installed")
@pytest.mark.parametrize("user", [False, True], ids=["system", "user"])
def test_systemd_analyze_verify_accepts_the_unit(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, user: bool
) -> None:
    env_file = tmp_path / "runscaler.env"
    env_file.write_text("")
    state = tmp_path / "state"
    state.mkdir()
    flags = ["--user"] if user else []
    out, _ = dry_run(capsys, *flags, "--env-file", str(env_file), "--state-dir", str(state))
    unit = tmp_path / "runscaler.service"
    unit.write_text(out)
    runtime = tmp_path / "runtime"
    runtime.mkdir(mode=0o700)
    env = {**os.environ, "XDG_RUNTIME_DIR": str(runtime)}

    verify = subprocess.run(
        [str(SYSTEMD_ANALYZE), *flags, "verify", str(unit)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )

    # verify exits 0 even for unknown keys; what it says about our unit is the verdict.
    about_ours = [line for line in verify.stderr.splitlines() if str(unit) in line]
    assert verify.returncode == 0, verify.stderr
    assert about_ours == []


def test_the_launchd_plist_finds_homebrew_and_sources_the_env_file(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    out, err = dry_run(
        capsys, "--manager", "launchd", "--user", "--env-file", str(tmp_path / "t.env")
    )

    job = plistlib.loads(out.encode())
    assert job["Label"] == "dev.runscaler.runscaler"
    assert job["EnvironmentVariables"]["PATH"].split(":")[0] == "/opt/homebrew/bin"
    assert job["EnvironmentVariables"]["PATH"] == LAUNCHD_PATH
    shell, dash_c, _script, env_file, *command = job["ProgramArguments"]
    assert (shell, dash_c, env_file) == ("/bin/sh", "-c", str(tmp_path / "t.env"))
    assert command[1:3] == ["run", str(EXAMPLE)]
    assert job["KeepAlive"] == {"SuccessfulExit": False}
    assert job["RunAtLoad"] is True
    assert "launchctl bootstrap gui/" in err


def test_the_plists_shell_exports_the_env_file_and_execs_the_operator(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    env_file = tmp_path / "t.env"
    env_file.write_text("GITHUB_TOKEN=from-the-env-file\n")
    out, _ = dry_run(capsys, "--manager", "launchd", "--user", "--env-file", str(env_file))
    shell, dash_c, script, path, *_ = plistlib.loads(out.encode())["ProgramArguments"]

    # The loader as launchd would run it, with a command that prints what the operator sees.
    done = subprocess.run(
        [shell, dash_c, script, path, "/bin/sh", "-c", 'echo "$GITHUB_TOKEN"'],
        capture_output=True,
        text=True,
        env={"PATH": os.environ["PATH"]},
        timeout=10,
        check=True,
    )

    assert done.stdout == "from-the-env-file\n"


def test_no_token_value_ever_reaches_the_unit(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GITHUB_TOKEN", "ghp_secret_value_123")

    out, err = dry_run(capsys)

    assert "ghp_secret_value_123" not in out + err


def _fake_systemctl(bin_dir: Path, log: Path) -> None:
    """A `systemctl` that records its arguments: this machine's systemd must not be touched."""
    bin_dir.mkdir()
    script = bin_dir / "systemctl"
    script.write_text(f'#!/bin/sh\necho "$*" >> "{log}"\n')
    script.chmod(0o755)


def test_install_writes_the_unit_and_a_private_env_file_then_enables_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    log = tmp_path / "systemctl.log"
    _fake_systemctl(tmp_path / "bin", log)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    units, env_file = tmp_path / "units", tmp_path / "etc" / "acme.env"
    argv = ["--manifest", str(EXAMPLE), "--name", "acme", "--unit-dir", str(units)]

    code = run(
        ["service", "install", *argv, "--env-file", str(env_file), "--state-dir", str(tmp_path)]
    )

    _, err = capsys.readouterr()
    assert code == 0, err
    assert (units / "acme.service").read_text().startswith("# Written by `runscaler service")
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
    assert "GITHUB_TOKEN=" in env_file.read_text()
    assert log.read_text().splitlines() == ["daemon-reload", "enable --now acme"]
    assert f"tokens go in {env_file}" in err

    code = run(["service", "uninstall", "--name", "acme", "--unit-dir", str(units)])

    assert code == 0
    assert not (units / "acme.service").exists()
    assert env_file.exists()  # the tokens are the user's to remove
    assert log.read_text().splitlines()[2:] == ["disable --now acme", "daemon-reload"]


def test_install_refuses_an_env_file_others_can_read(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    env_file = tmp_path / "acme.env"
    env_file.write_text("GITHUB_TOKEN=x\n")
    env_file.chmod(0o644)

    code = run(
        [
            "service",
            "install",
            "--manifest",
            str(EXAMPLE),
            "--env-file",
            str(env_file),
            "--unit-dir",
            str(tmp_path / "units"),
        ]
    )

    assert code == 1
    assert capsys.readouterr().err == (
        f"runscaler: {env_file}: holds tokens but is readable by others (mode 0644): "
        f"chmod 600 {env_file}\n"
    )
    assert not (tmp_path / "units").exists()


def test_install_refuses_an_invalid_manifest_before_writing_anything(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest = tmp_path / "fleet.yaml"
    manifest.write_text("apiVersion: runscaler/v1\nkind: Fleet\n")

    code = run(
        [
            "service",
            "install",
            "--manifest",
            str(manifest),
            "--unit-dir",
            str(tmp_path / "u"),
            "--env-file",
            str(tmp_path / "e.env"),
        ]
    )

    err = capsys.readouterr().err
    assert code == 1
    assert err.startswith(f"{manifest}:")
    assert "Traceback" not in err
    assert not (tmp_path / "u").exists() and not (tmp_path / "e.env").exists()


def test_a_machine_without_systemctl_gets_a_one_line_hint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))

    code = run(["service", "status", "--name", "acme"])

    assert code == 1
    assert capsys.readouterr().err == (
        "runscaler: systemctl not found: this machine does not run that service manager; "
        "print the unit with --dry-run and install it by hand, or pick --manager\n"
    )


def test_a_bad_service_name_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    code = run(["service", "install", "--dry-run", "--name", "a b"])

    assert code == 1
    assert "--name 'a b': use letters, digits" in capsys.readouterr().err
