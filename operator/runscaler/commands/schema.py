"""`runscaler schema`: print the manifest's JSON Schema, for editors and check-jsonschema."""

from __future__ import annotations

import argparse
import sys

HELP = "print the JSON Schema of the fleet manifest (draft-07)"
EXAMPLES = """\
  runscaler schema > fleet-v1.schema.json
  check-jsonschema --schemafile fleet-v1.schema.json fleet.yaml"""


def configure(parser: argparse.ArgumentParser) -> None:
    del parser  # no options


def main(args: argparse.Namespace) -> int:
    del args
    from runscaler.manifest.schema import schema_text

    sys.stdout.write(schema_text())
    return 0
