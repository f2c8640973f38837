"""`runscaler version`: what is installed, for bug reports."""

from __future__ import annotations

import argparse
import platform
import sys
from importlib import metadata

from runscaler import __version__

HELP = "print the version, Python, platform and dependency versions"
EXAMPLES = "  runscaler version"

DEPENDENCIES = (
    "pydantic",
    "ruamel.yaml",
    "tomli-w",
    "jsonschema",
    "httpx",
    "h11",
    "aiohttp",
    "watchfiles",
    "rich",
    "PyJWT",
    "prometheus-client",
)


def configure(parser: argparse.ArgumentParser) -> None:
    del parser  # no options


def main(args: argparse.Namespace) -> int:
    del args
    print(f"runscaler {__version__}")
    print(f"python {platform.python_version()} ({sys.implementation.name})")
    print(f"platform {platform.platform()}")
    for name in DEPENDENCIES:
        try:
            version = metadata.version(name)
        except metadata.PackageNotFoundError:
            version = "not installed"
        print(f"{name} {version}")
    return 0
