"""The JSON Schema: generated from the models, checked in, and what editors and CI can use."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft7Validator

from runscaler.cli import run
from runscaler.manifest import load_manifest
from runscaler.manifest.schema import DRAFT_07, SCHEMA_ID, document_schema, schema_text

ROOT = Path(__file__).resolve().parents[2]
SCHEMA_FILE = ROOT / "schemas" / "fleet-v1.schema.json"
EXAMPLES = sorted(
    [ROOT / "fleet.yaml", *(ROOT / "examples").glob("*.yaml"), *(ROOT / "examples").glob("*.toml")]
)
# Keywords of drafts after 7 that editors' YAML language servers ignore.
NEWER_KEYWORDS = {
    "$defs",
    "unevaluatedProperties",
    "unevaluatedItems",
    "prefixItems",
    "dependentRequired",
    "dependentSchemas",
    "$dynamicRef",
    "$anchor",
}


def test_the_checked_in_schema_is_the_generated_one() -> None:
    assert SCHEMA_FILE.read_text(encoding="utf-8") == schema_text(), (
        "schemas/fleet-v1.schema.json is stale: "
        "run `runscaler schema > schemas/fleet-v1.schema.json`"
    )


def test_the_schema_command_prints_it(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["schema"]) == 0
    assert capsys.readouterr().out == SCHEMA_FILE.read_text(encoding="utf-8")


def test_it_is_a_valid_draft_07_schema_naming_its_version() -> None:
    schema = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    Draft7Validator.check_schema(schema)
    assert schema["$schema"] == DRAFT_07
    assert schema["$id"] == SCHEMA_ID
    assert "v1" in schema["$id"]


def walk(node: Any) -> list[dict[str, Any]]:
    found = []
    if isinstance(node, dict):
        found.append(node)
        for value in node.values():
            found += walk(value)
    elif isinstance(node, list):
        for value in node:
            found += walk(value)
    return found


def test_it_uses_the_draft_07_subset_and_refuses_unknown_keys_everywhere() -> None:
    schema = document_schema()
    nodes = walk(schema)
    assert not NEWER_KEYWORDS & {key for node in nodes for key in node}
    models = [node for node in nodes if "properties" in node]
    assert len(models) >= 12
    assert all(node.get("additionalProperties") is False for node in models)
    assert all("$ref" not in node or len(node) == 1 for node in nodes)  # draft 7 ignores siblings


def test_it_describes_the_document_as_written() -> None:
    schema = document_schema()
    definitions = schema["definitions"]
    assert schema["required"] == ["apiVersion", "kind", "metadata", "scaleSets"]
    assert definitions["ScaleSet"]["required"] == ["name"]
    assert "required" not in definitions["GitHub"]  # url and auth may come from defaults
    assert "name" not in definitions["ScaleSetDefaults"]["properties"]
    assert set(definitions["ScaleSetDefaults"]["properties"]) == (
        set(definitions["ScaleSet"]["properties"]) - {"name"}
    )
    assert definitions["AppAuth"]["required"] == ["clientId", "installationId", "privateKey"]
    assert definitions["ScaleSet"]["properties"]["drainTimeout"]["default"] == "6h"
    assert definitions["ScaleSet"]["properties"]["maxRunners"]["description"]


def test_inheriting_scale_sets_and_an_empty_list_are_schema_valid() -> None:
    validator = Draft7Validator(document_schema())
    head = {"apiVersion": "runscaler/v1", "kind": "Fleet", "metadata": {"name": "x"}}
    assert validator.is_valid({**head, "scaleSets": []})
    assert validator.is_valid(
        {
            **head,
            "defaults": {"github": {"url": "https://github.com/a", "auth": {"token": "env:T"}}},
            "scaleSets": [{"name": "a"}, {"name": "b", "github": {"url": "https://github.com/b"}}],
        }
    )
    assert not validator.is_valid({**head, "scaleSets": [{"maxRunners": 2}]})
    assert not validator.is_valid({**head, "defaults": {"name": "a"}, "scaleSets": []})


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_example_is_valid_for_runscaler(example: Path) -> None:
    loaded = load_manifest(example, strict=True)
    assert loaded.fleet.scale_sets


def test_every_example_is_valid_for_check_jsonschema() -> None:
    checker = Path(sys.executable).parent / "check-jsonschema"
    done = subprocess.run(
        [str(checker), "--schemafile", str(SCHEMA_FILE), *map(str, EXAMPLES)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize(
    "example",
    [p for p in EXAMPLES if p.suffix == ".yaml"],
    ids=lambda p: p.relative_to(ROOT).as_posix(),
)
def test_yaml_examples_point_editors_at_the_schema(example: Path) -> None:
    first = example.read_text(encoding="utf-8").splitlines()[0]
    prefix = "# yaml-language-server: $schema="
    assert first.startswith(prefix)
    assert (example.parent / first[len(prefix) :]).resolve() == SCHEMA_FILE


def test_the_ci_example_validates_and_plans_against_the_base_branch() -> None:
    from ruamel.yaml import YAML

    workflow = YAML(typ="safe").load(ROOT / "examples" / "ci" / "validate-and-plan.yml")
    assert "pull_request" in workflow["on"]
    steps = workflow["jobs"]["validate-and-plan"]["steps"]
    checkout = next(s for s in steps if s.get("uses", "").startswith("actions/checkout"))
    assert checkout["with"]["fetch-depth"] == 0
    commands = " ".join(s.get("run", "") for s in steps)
    assert "runscaler validate fleet.yaml --format github" in commands
    assert '--against "git:origin/${{ github.base_ref }}"' in commands
    assert '--format markdown >> "$GITHUB_STEP_SUMMARY"' in commands


def test_the_ci_example_installs_runscaler_from_its_repository_not_an_index() -> None:
    from ruamel.yaml import YAML

    workflow = YAML(typ="safe").load(ROOT / "examples" / "ci" / "validate-and-plan.yml")
    steps = workflow["jobs"]["validate-and-plan"]["steps"]
    source = next(s for s in steps if s.get("name") == "Check out runscaler")
    install = next(s for s in steps if s.get("name") == "Install runscaler")

    assert source["uses"].startswith("actions/checkout@")
    assert source["with"]["repository"] == "${{ vars.RUNSCALER_REPOSITORY }}"
    assert source["with"]["ref"] == "${{ vars.RUNSCALER_REF }}"
    assert install["run"] == f"pip install ./{source['with']['path']}"
    assert steps.index(source) < steps.index(install)
    # What it checks out is this repository: a pip-installable project at its root.
    assert (ROOT / "pyproject.toml").is_file()


def test_the_pre_commit_hook_runs_validate_on_fleet_manifests() -> None:
    import re

    from ruamel.yaml import YAML

    (hook,) = YAML(typ="safe").load(ROOT / ".pre-commit-hooks.yaml")
    assert hook["id"] == "runscaler-validate"
    assert hook["entry"] == "runscaler validate"
    assert hook["language"] == "python"
    files = re.compile(hook["files"])
    assert files.search("fleet.yaml") and files.search("deploy/fleet-prod.toml")
    assert not files.search("docker-compose.yaml")
