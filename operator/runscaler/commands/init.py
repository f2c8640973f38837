"""`runscaler init`: write a first fleet manifest, commented key by key.

On a terminal it asks for what the flags leave out (each question with a default where one
makes sense); in a script every value comes from flags, and a missing required one is a
one-line error naming the flag. Secrets are only ever references (`env:NAME`, `file:PATH`): a
value that looks like a token or a key is refused, and no answer is ever echoed in an error.
The text is validated by the real loader before it is written, and an existing file is only
replaced with `--force`.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TypeVar

from runscaler.errors import UserError

HELP = "write a commented fleet manifest (interactively, or from flags for scripts)"
EXAMPLES = """\
  runscaler init                                         # asks on a terminal; writes ./fleet.yaml
  runscaler init fleet.yaml --name acme-ci --url https://github.com/acme
  runscaler init --name acme-ci --url https://github.com/acme --token-env GH_RUNNER_TOKEN
  runscaler init --name acme-ci --url https://github.com/acme \\
      --app-client-id Iv23liExample --app-installation-id 12345678 --app-key-file /etc/app.pem"""

T = TypeVar("T")
Prompt = Callable[[str, str | None], str]
"""Ask one question (with its default, if any); return the answer as typed."""

DEFAULT_TOKEN_ENV = "GITHUB_TOKEN"
DEFAULT_SCALE_SET = "linux"
DEFAULT_MAX_RUNNERS = "10"
SCHEMA_PATH = "schemas/fleet-v1.schema.json"
_TOKEN_LOOKING = re.compile(r"^(gh[opsuri]_|github_pat_)", re.IGNORECASE)
_PLAIN = re.compile(r"^[A-Za-z/][A-Za-z0-9_./:@+~-]*$")
_YAML_WORDS = {"true", "false", "yes", "no", "on", "off", "y", "n", "null", "~"}


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "file",
        nargs="?",
        type=Path,
        metavar="FILE",
        help="where to write (default: $RUNSCALER_MANIFEST, else ./fleet.yaml)",
    )
    parser.add_argument("--name", metavar="FLEET", help="metadata.name, e.g. acme-ci")
    parser.add_argument("--url", help="https://HOST/ORG, https://HOST/ORG/REPO or …/enterprises/X")
    parser.add_argument(
        "--token-env",
        metavar="NAME",
        help=f"token auth: the environment variable holding it (default: {DEFAULT_TOKEN_ENV})",
    )
    parser.add_argument("--app-client-id", metavar="ID", help="GitHub App auth: its client id")
    parser.add_argument(
        "--app-installation-id", metavar="N", help="GitHub App auth: the installation id"
    )
    parser.add_argument(
        "--app-key-file", metavar="PATH", help="GitHub App auth: its private key (PEM) file"
    )
    parser.add_argument(
        "--scale-set", metavar="NAME", help=f"the first scale set (default: {DEFAULT_SCALE_SET})"
    )
    parser.add_argument(
        "--max-runners", metavar="N", help=f"its runner cap (default: {DEFAULT_MAX_RUNNERS})"
    )
    parser.add_argument("--image", help="its runner image (default: the official runner image)")
    parser.add_argument("--force", action="store_true", help="overwrite FILE if it exists")


@dataclass(frozen=True)
class Answers:
    name: str
    url: str
    scale_set: str
    max_runners: int
    image: str
    token_env: str | None = None
    app_client_id: str | None = None
    app_installation_id: int | None = None
    app_key_file: str | None = None


# -- one rule per value: ValueError says what is wrong, never repeating a possible secret --------


def check_fleet_name(value: str) -> str:
    from runscaler.manifest.models import FLEET_NAME_PATTERN

    if not re.fullmatch(FLEET_NAME_PATTERN, value):
        raise ValueError(
            f"{value!r} is not a fleet name: lowercase letters, digits and -, at most 40, "
            "starting and ending with a letter or digit (e.g. acme-ci)"
        )
    return value


def check_url(value: str) -> str:
    from runscaler.manifest.values import parse_config_url

    parse_config_url(value)
    return value.strip().rstrip("/")


def check_scale_set(value: str) -> str:
    from runscaler.manifest.models import SCALE_SET_NAME_PATTERN

    if not re.fullmatch(SCALE_SET_NAME_PATTERN, value):
        raise ValueError(
            f"{value!r} is not a scale set name: letters, digits, '.', '_' and '-', at most 45"
        )
    return value


def check_positive(value: str) -> int:
    if not re.fullmatch(r"[0-9]{1,9}", value.strip()) or int(value) < 1:
        raise ValueError(f"{value!r} is not a whole number of at least 1")
    return int(value)


def check_image(value: str) -> str:
    if not value.strip() or re.search(r"\s", value.strip()):
        raise ValueError(f"{value!r} is not an image reference (e.g. ghcr.io/org/runner:latest)")
    return value.strip()


def check_token_env(value: str) -> str:
    from runscaler.manifest.values import ENV_NAME_PATTERN

    if _TOKEN_LOOKING.match(value):
        raise ValueError(
            "takes the name of the environment variable that holds the token "
            f"(e.g. {DEFAULT_TOKEN_ENV}), not the token itself: keep tokens out of manifests"
        )
    if not re.fullmatch(ENV_NAME_PATTERN, value):
        raise ValueError(
            "is not an environment variable name (letters, digits and _, not starting with a "
            f"digit; e.g. {DEFAULT_TOKEN_ENV})"
        )
    return value


def check_client_id(value: str) -> str:
    if not value.strip() or re.search(r"\s", value.strip()):
        raise ValueError("is not an App client id (e.g. Iv23liExample, or the numeric app id)")
    return value.strip()


def check_key_file(value: str) -> str:
    if "-----BEGIN" in value or "\n" in value:
        raise ValueError(
            "takes the path of the App's private key file, not the key itself: keep keys "
            "out of manifests"
        )
    if not value.strip():
        raise ValueError("needs the path of the App's private key file (PEM)")
    return value.strip()


# -- gathering the answers -------------------------------------------------------------------


class _Asker:
    """Each value from its flag, else from the prompt (re-asked until valid), else a default."""

    def __init__(self, args: argparse.Namespace, prompt: Prompt | None) -> None:
        self.args = args
        self.prompt = prompt

    def get(
        self,
        dest: str,
        question: str,
        check: Callable[[str], T],
        *,
        default: str | None,
        required: bool = False,
    ) -> T:
        flag = "--" + dest.replace("_", "-")
        given = getattr(self.args, dest)
        if given is not None:
            try:
                return check(given)
            except ValueError as exc:
                raise UserError(f"{flag}: {exc}") from None
        if self.prompt is None:
            if required or default is None:
                example = ""
                if dest in ("name", "url"):
                    example = " (e.g. runscaler init --name acme-ci --url https://github.com/acme)"
                raise UserError(
                    f"{flag} is required: stdin is not a terminal, so init cannot ask{example}"
                )
            return check(default)
        while True:
            answer = self.prompt(question, default).strip() or (default or "")
            try:
                return check(answer)
            except ValueError as exc:
                print(f"  {flag}: {exc}", file=sys.stderr)


def gather(args: argparse.Namespace, *, prompt: Prompt | None) -> Answers:
    """The answers from flags and, when `prompt` is given (a terminal), from questions."""
    from runscaler.manifest.models import DEFAULT_DOCKER_IMAGE

    ask = _Asker(args, prompt)
    name = ask.get("name", "Fleet name", check_fleet_name, default=_default_name(), required=True)
    url = ask.get("url", "GitHub URL (https://HOST/ORG or /ORG/REPO)", check_url, default=None)
    auth = Answers(name=name, url=url, scale_set="", max_runners=1, image="")
    if _wants_app(args, prompt):
        auth = replace(
            auth,
            app_client_id=ask.get("app_client_id", "App client id", check_client_id, default=None),
            app_installation_id=ask.get(
                "app_installation_id", "App installation id", check_positive, default=None
            ),
            app_key_file=ask.get(
                "app_key_file", "App private key file (PEM)", check_key_file, default=None
            ),
        )
    else:
        auth = replace(
            auth,
            token_env=ask.get(
                "token_env",
                "Environment variable holding the token",
                check_token_env,
                default=DEFAULT_TOKEN_ENV,
            ),
        )
    return replace(
        auth,
        scale_set=ask.get(
            "scale_set",
            "Scale set name (its runs-on label)",
            check_scale_set,
            default=DEFAULT_SCALE_SET,
        ),
        max_runners=ask.get(
            "max_runners", "Max runners at once", check_positive, default=DEFAULT_MAX_RUNNERS
        ),
        image=ask.get("image", "Runner image", check_image, default=DEFAULT_DOCKER_IMAGE),
    )


def _wants_app(args: argparse.Namespace, prompt: Prompt | None) -> bool:
    app_flags = [args.app_client_id, args.app_installation_id, args.app_key_file]
    if args.token_env is not None and any(v is not None for v in app_flags):
        raise UserError("use either --token-env or the --app-* flags, not both")
    if args.token_env is not None or any(v is not None for v in app_flags):
        return args.token_env is None
    if prompt is None:
        return False
    while True:
        answer = prompt("Sign in with a token or a GitHub App? (token/app)", "token")
        choice = (answer.strip() or "token").lower()
        if choice in ("token", "app"):
            return choice == "app"
        print("  answer token or app", file=sys.stderr)


def _default_name() -> str:
    name = re.sub(r"[^a-z0-9-]+", "-", Path.cwd().name.lower()).strip("-")[:40].strip("-")
    return name or "my-fleet"


# -- the manifest text --------------------------------------------------------------------------


def scalar(value: str) -> str:
    """`value` as a YAML scalar that reads back as the same string."""
    if _PLAIN.fullmatch(value) and value.lower() not in _YAML_WORDS:
        return value
    return json.dumps(value)  # a JSON string is a YAML double-quoted scalar


def key_ref(typed: str, *, manifest_dir: Path) -> str:
    """`file:PATH` for the key: relative to the manifest when it lies beside it (the loader
    resolves relative paths against the manifest's directory), else absolute."""
    path = Path(typed)
    if typed.startswith("~") or path.is_absolute():
        return f"file:{typed}"
    absolute = (Path.cwd() / path).resolve()
    try:
        return f"file:{absolute.relative_to(manifest_dir.resolve())}"
    except ValueError:
        return f"file:{absolute}"


def _auth_block(answers: Answers, *, manifest_dir: Path) -> str:
    if answers.token_env is not None:
        return (
            "      # A personal access token, read from the operator's environment when it\n"
            "      # starts and on every reload. Never write a token here: this file is in git.\n"
            f"      token: {scalar('env:' + answers.token_env)}\n"
        )
    assert answers.app_client_id and answers.app_installation_id and answers.app_key_file
    key = key_ref(answers.app_key_file, manifest_dir=manifest_dir)
    return (
        "      # A GitHub App installation (preferred: scoped, short-lived tokens). Its private\n"
        "      # key is read from the file on every reload: rotate it without a restart.\n"
        "      app:\n"
        f"        clientId: {json.dumps(answers.app_client_id)}   # its client id (or app id)\n"
        f"        installationId: {answers.app_installation_id}\n"
        f"        privateKey: {scalar(key)}   # relative paths are relative to this file\n"
    )


def local_image(image: str) -> bool:
    """An image with no registry or namespace (`runner:2`, the simulator's stand-in): built on
    this engine, not in a registry, so pulling it would only reach Docker Hub and fail."""
    return "/" not in image.split("@", 1)[0]


def _pull_line(image: str) -> str:
    if local_image(image):
        return "pull: never                    # a local image: built here, never pulled"
    return "pull: missing                  # always | missing | never"


def render(answers: Answers, *, file: str, manifest_dir: Path) -> str:
    """The commented manifest."""
    return f"""\
# yaml-language-server: $schema={SCHEMA_PATH}
#
# A runscaler fleet: every runner scale set one operator keeps running. Keep it in git.
#   runscaler validate {file}          check it (as CI should on every pull request)
#   runscaler run {file} --dry-run     prove the credentials, runner group, engine and image
#   runscaler run {file}               run the fleet; edits to this file apply live
# The modeline above lets editors check this file as you type once the schema is there:
#   runscaler schema > {SCHEMA_PATH}
apiVersion: runscaler/v1    # the manifest format version
kind: Fleet
metadata:
  # The fleet's identity, stamped on every container it owns. Changing it orphans them.
  name: {scalar(answers.name)}

# What every scale set inherits (deep-merged): a scale set only says what differs.
defaults:
  github:
    # The organization (https://github.com/ORG), repository (https://github.com/ORG/REPO)
    # or enterprise (https://github.com/enterprises/SLUG) the runners serve.
    url: {scalar(answers.url)}
    auth:
{_auth_block(answers, manifest_dir=manifest_dir)}\
  # When a scale set is removed or suspended, how long its busy runners may finish their job.
  drainTimeout: 6h

scaleSets:
  # A workflow job with `runs-on: {answers.scale_set}` runs here. Add an entry per kind of runner.
  - name: {scalar(answers.scale_set)}
    # labels: [self-hosted, linux]   # more runs-on labels (the name is always one)
    # runnerGroup: default           # the runner group on GitHub
    minRunners: 0                    # idle runners kept warm for a quick start
    # At most this many runners (one job each) at once.
    maxRunners: {answers.max_runners}
    docker:
      # The runner image; it needs the official image's layout (user runner, run.sh).
      image: {scalar(answers.image)}
      {_pull_line(answers.image)}
      # cpus: 2                      # CPU limit, in cores
      # memory: 4GiB                 # memory limit
"""


# -- the command ---------------------------------------------------------------------------------


def terminal_prompt(question: str, default: str | None) -> str:
    shown = f" [{default}]" if default else ""
    try:
        return input(f"{question}{shown}: ")
    except EOFError:
        raise UserError("init: no answer (input ended); nothing was written") from None


def main(args: argparse.Namespace) -> int:
    from runscaler.paths import default_manifest_path

    path: Path = args.file or default_manifest_path()
    _check_target(path, force=args.force)
    answers = gather(args, prompt=terminal_prompt if sys.stdin.isatty() else None)
    text = render(answers, file=str(path), manifest_dir=path.absolute().parent)
    for warning in _validate(text, path):
        print(warning, file=sys.stderr)
    _write(path, text, force=args.force)
    print(f"wrote {path}: fleet {answers.name}, scale set {answers.scale_set} on {answers.url}")
    for line in _next_steps(answers, path):
        print(line)
    return 0


def _check_target(path: Path, *, force: bool) -> None:
    if path.suffix.lower() not in (".yaml", ".yml"):
        raise UserError(f"{path}: init writes YAML: name the file .yaml or .yml")
    if path.is_dir():
        raise UserError(f"{path}: is a directory: name the manifest file (e.g. fleet.yaml)")
    if path.exists() and not force:
        raise UserError(f"{path}: already exists: pass --force to overwrite it")


def _validate(text: str, path: Path) -> list[str]:
    from runscaler.errors import ManifestError
    from runscaler.manifest.loading import load_manifest_text

    try:
        loaded = load_manifest_text(
            text, source=str(path), fmt="yaml", base_dir=path.absolute().parent
        )
    except ManifestError as exc:
        first = exc.diagnostics[0].located() if exc.diagnostics else str(exc)
        raise UserError(f"{path}: not written: the manifest would be invalid: {first}") from None
    return [w.located() for w in loaded.warnings]


def _write(path: Path, text: str, *, force: bool) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w" if force else "x", encoding="utf-8") as handle:
            handle.write(text)
    except FileExistsError:
        raise UserError(f"{path}: already exists: pass --force to overwrite it") from None
    except OSError as exc:
        raise UserError(f"{path}: cannot write: {exc.strerror or exc}") from None


def _next_steps(answers: Answers, path: Path) -> list[str]:
    steps = ["next:"]
    if answers.token_env is not None:
        steps.append(
            f"  export {answers.token_env}=...   # a token that may manage self-hosted runners "
            "(classic: admin:org for an organization, repo for a repository)"
        )
    else:
        key = answers.app_key_file or ""
        if not os.access(os.path.expanduser(key), os.R_OK):
            steps.append(f"  put the App's private key at {key} (it is not readable yet)")
    steps.append(f"  runscaler run {path} --dry-run")
    return steps
