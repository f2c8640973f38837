"""`runscaler convert`: a Go original's config.toml becomes a v1 fleet manifest.

The conversion itself is pure (`runscaler.converting`); this command reads the TOML, writes
YAML or TOML, proves the result loads as a manifest, and says on stderr what did not carry
over and which `runscaler run` flags replace the config's process settings.
"""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path
from typing import Any, Literal

from runscaler.errors import UserError

HELP = "turn a config of the Go original (config.toml) into a v1 fleet manifest"
EXAMPLES = """\
  runscaler convert config.toml > fleet.yaml
  runscaler convert config.toml --name acme-ci -o fleet.yaml
  runscaler convert config.toml --format toml -o fleet.toml"""

SCHEMA_PATH = "schemas/fleet-v1.schema.json"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", type=Path, metavar="CONFIG.toml", help="the Go config file")
    parser.add_argument(
        "--name",
        metavar="FLEET",
        help="metadata.name (default: the config's top-level name, else its file name)",
    )
    parser.add_argument(
        "--format",
        choices=("yaml", "toml"),
        help="output format (default: from -o's extension, else yaml)",
    )
    parser.add_argument(
        "-o", "--output", type=Path, metavar="FILE", help="write here instead of stdout"
    )


def main(args: argparse.Namespace) -> int:
    from runscaler.converting import check_fleet_name, convert, fleet_name_of

    config_path: Path = args.config
    if args.output is not None and args.output.resolve() == config_path.resolve():
        raise UserError(f"{args.output}: is the config being converted: write elsewhere")
    config = read_config(config_path)
    if args.name:
        name = check_fleet_name(args.name)
    else:
        name, from_file = fleet_name_of(config, stem=config_path.stem)
        if from_file:
            print(
                f"{config_path}: metadata.name {name} is the file's name (the config has no "
                "top-level name): pass --name to choose another",
                file=sys.stderr,
            )
    conversion = convert(config, fleet_name=name, source=str(config_path))
    fmt = _format(args.format, args.output)
    text = render(conversion.manifest, fmt=fmt, source=config_path.name)
    for line in (*conversion.warnings, *_validate(text, fmt=fmt, config_path=config_path)):
        print(line, file=sys.stderr)
    if args.output is None:
        sys.stdout.write(text)
        sys.stdout.flush()
    else:
        _write(args.output, text)
    target = str(args.output) if args.output else f"fleet.{fmt}"
    if conversion.run_flags:
        flags = " ".join(conversion.run_flags)
        print(f"process settings: run it with: runscaler run {target} {flags}", file=sys.stderr)
    return 0


def read_config(path: Path) -> dict[str, Any]:
    """The parsed TOML; every way it can fail is one line naming the file (and where in it,
    worded as `runscaler validate` words it)."""
    from runscaler.manifest.toml_reading import TOMLProblem, read_toml

    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise UserError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise UserError(f"{path}: is a directory, not a config file") from None
    except OSError as exc:
        raise UserError(f"{path}: cannot read: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UserError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    try:
        data, _ = read_toml(text)
    except TOMLProblem as problem:
        where = f"{path}:{problem.mark.line}:{problem.mark.col}" if problem.mark else str(path)
        raise UserError(f"{where}: {problem.message}") from None
    return data


def _format(chosen: str | None, output: Path | None) -> Literal["yaml", "toml"]:
    if chosen == "toml" or (chosen is None and output and output.suffix.lower() == ".toml"):
        return "toml"
    return "yaml"


def render(manifest: dict[str, Any], *, fmt: Literal["yaml", "toml"], source: str) -> str:
    """The manifest as a file, with the schema directive and a note of where it came from."""
    note = f"# Converted by `runscaler convert` from {source} (a config of the Go original).\n"
    if fmt == "toml":
        import tomli_w

        return f"#:schema {SCHEMA_PATH}\n{note}\n{tomli_w.dumps(manifest)}"
    return f"# yaml-language-server: $schema={SCHEMA_PATH}\n{note}\n{_yaml(manifest)}"


def _yaml(manifest: dict[str, Any]) -> str:
    from ruamel.yaml import YAML
    from ruamel.yaml.comments import CommentedMap, CommentedSeq

    def shaped(value: Any) -> Any:
        if isinstance(value, dict):
            return CommentedMap((k, shaped(v)) for k, v in value.items())
        if isinstance(value, list):
            seq = CommentedSeq(shaped(v) for v in value)
            if all(not isinstance(v, dict | list) for v in value):
                seq.fa.set_flow_style()  # labels: [self-hosted, linux]
            return seq
        return value

    yaml = YAML()
    yaml.indent(mapping=2, sequence=4, offset=2)
    yaml.width = 100
    out = io.StringIO()
    yaml.dump(shaped(manifest), out)
    return out.getvalue()


def _validate(text: str, *, fmt: Literal["yaml", "toml"], config_path: Path) -> list[str]:
    """Load the output as `runscaler validate` would; its warnings, or an error naming the key."""
    from runscaler.errors import ManifestError
    from runscaler.manifest import load_manifest_text

    try:
        loaded = load_manifest_text(
            text, source=f"<converted {config_path.name}>", fmt=fmt, base_dir=Path.cwd()
        )
    except ManifestError as exc:
        first = exc.diagnostics[0] if exc.diagnostics else None
        what = f"{first.path}: {first.message}" if first and first.path else exc
        raise UserError(
            f"{config_path}: cannot convert: the manifest would be invalid: {what}"
        ) from None
    return [
        f"{config_path}: warning: {w.path + ': ' if w.path else ''}{w.message}"
        for w in loaded.warnings
    ]


def _write(path: Path, text: str) -> None:
    try:
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise UserError(f"{path}: cannot write: {exc.strerror or exc}") from None
