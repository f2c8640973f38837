"""The package as a user installs it: `python -m build` makes an sdist and a wheel (the wheel from
the sdist, so both carry what the commands need at run time), the wheel goes into a fresh
virtualenv, and its `runscaler` runs `version`, `validate`, `schema` and `simulator --help`.

Nothing is downloaded: the build runs without isolation on the dev environment's setuptools,
and the fresh venv borrows the dev environment's installed dependencies through a path entry
(not its site directory, so the dev tree's editable runscaler is not seen there).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]
pytestmark = pytest.mark.slow

_NOT_SHIPPED = shutil.ignore_patterns(
    ".git", ".venv", "*.egg-info", "build", "dist", "__pycache__", ".*_cache", ".hypothesis"
)


def _run(*argv: str | Path, cwd: Path | None = None, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(
        [str(a) for a in argv],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, f"{argv}: {done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The sdist and the wheel, built from a copy of the tree (the build writes into it)."""
    work = tmp_path_factory.mktemp("wheel")
    source = work / "source"
    shutil.copytree(ROOT, source, ignore=_NOT_SHIPPED)
    out = work / "dist"
    _run(sys.executable, "-m", "build", "--no-isolation", "--outdir", out, source)
    (sdist,) = out.glob("runscaler-*.tar.gz")
    (wheel,) = out.glob("runscaler-*.whl")
    return sdist, wheel


@pytest.fixture(scope="module")
def venv(built: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    _, wheel = built
    root = tmp_path_factory.mktemp("venv") / "venv"
    _run(sys.executable, "-m", "venv", "--without-pip", root)
    purelib = Path(sysconfig.get_path("purelib", vars={"base": str(root), "platbase": str(root)}))
    dev_deps = sysconfig.get_path("purelib")
    (purelib / "dev-dependencies.pth").write_text(f"{dev_deps}\n")
    _run(
        sys.executable, "-m", "pip", "--python", root / "bin" / "python", "install",
        "--no-index", "--no-deps", "--quiet", wheel,
    )  # fmt: skip
    return root


def test_the_sdist_and_the_wheel_carry_the_license_and_the_runner_image_context(
    built: tuple[Path, Path],
) -> None:
    sdist, wheel = built

    shipped = set(zipfile.ZipFile(wheel).namelist())
    with tarfile.open(sdist) as tar:
        in_sdist = {name.split("/", 1)[1] for name in tar.getnames() if "/" in name}

    assert {
        "runscaler/simulator/runner/run.sh",
        "runscaler/simulator/runner/build-image",
        "runscaler/py.typed",
    } <= shipped
    assert any(name.endswith(".dist-info/licenses/LICENSE") for name in shipped)
    metadata = next(n for n in shipped if n.endswith(".dist-info/METADATA"))
    assert "License-Expression: MIT" in zipfile.ZipFile(wheel).read(metadata).decode()
    assert {"LICENSE", "schemas/fleet-v1.schema.json", "examples/single-org-docker.yaml"} <= (
        in_sdist
    )


def _runscaler(venv: Path, *argv: str | Path) -> str:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(ROOT / "tests" / "guard")  # the loopback guard, not the source tree
    return _run(venv / "bin" / "runscaler", *argv, cwd=venv, env=env)


def test_the_installed_wheel_runs_from_its_own_venv(venv: Path) -> None:
    where = _run(venv / "bin" / "python", "-c", "import runscaler; print(runscaler.__file__)")

    assert Path(where.strip()).is_relative_to(venv)
    assert _runscaler(venv, "version").startswith("runscaler 0.1.0.dev0")


def test_the_installed_wheel_validates_an_example_and_prints_the_schema(venv: Path) -> None:
    _runscaler(venv, "validate", ROOT / "examples" / "single-org-docker.yaml")

    schema = _runscaler(venv, "schema")

    assert schema == (ROOT / "schemas" / "fleet-v1.schema.json").read_text()


def test_the_installed_wheel_has_the_simulator_and_its_runner_image_build(venv: Path) -> None:
    text = _runscaler(venv, "simulator", "--help")

    assert "--listen HOST:PORT" in text
    code = "from runscaler.simulator.runner import build_script; print(build_script().is_file())"
    assert _run(venv / "bin" / "python", "-c", code).strip() == "True"
