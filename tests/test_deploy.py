"""The deployment recipes in deploy/ checked against the code they run.

Nothing here starts Docker or systemd: the recipes are read, and every fact they rely on is
taken from the code. Every environment name they set is one Pictor (or a named third-party
program) reads; every setting Pictor reads is in deploy/pictor.env.example with its real
default; every command they run exists; every stop waits longer than the grace the code gives.
"""

from __future__ import annotations

import ast
import functools
import importlib
import itertools
import os
import re
import secrets
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
ENV_EXAMPLE = DEPLOY / "pictor.env.example"
CONFIGURATION = ROOT / "docs" / "configuration.md"
COMPOSE = DEPLOY / "compose.yaml"
DOCKERFILE = DEPLOY / "Dockerfile"
WEB_UNIT = DEPLOY / "systemd" / "pictor-web.service"
WORKER_UNIT = DEPLOY / "systemd" / "pictor-worker@.service"

# Where Pictor reads its environment. sdplatform/env.py is left out: it defines the readers,
# whose `os.environ.get(name)` takes the name as a parameter.
SCANNED = ("sdplatform", "generation", "accounts", "billing", "manage.py")
READERS = {"envstr", "envbool", "envint", "envfloat"}

# Read by the code but chosen by it, not by a deployment.
NOT_SETTINGS = {"DJANGO_SETTINGS_MODULE"}
# Names the recipes may set although Pictor does not read them, each with its reader.
THIRD_PARTY = {
    "POSTGRES_DB": "the postgres image",
    "POSTGRES_USER": "the postgres image",
    "POSTGRES_PASSWORD": "the postgres image",
    "MINIO_ROOT_USER": "the minio image and the bucket job's mc",
    "MINIO_ROOT_PASSWORD": "the minio image and the bucket job's mc",
    "CUDA_VISIBLE_DEVICES": "CUDA: the GPU a worker uses",
    "HF_HUB_OFFLINE": "huggingface_hub: never download a model",
    "PYTHONUNBUFFERED": "Python",
    "PYTHONDONTWRITEBYTECODE": "Python",
    "PIP_NO_CACHE_DIR": "pip, at build",
    "PIP_DISABLE_PIP_VERSION_CHECK": "pip, at build",
    "VIRTUAL_ENV": "the image's venv",
    "PATH": "the shell",
    "MAINPID": "systemd, in ExecReload",
}
# What a deployment must set in its env file (uncommented in the example).
MUST_SET = {
    "DJANGO_ENV",
    "SECRET_KEY",
    "ALLOWED_HOSTS",
    "PICTOR_BASE_URL",
    "PICTOR_TRUSTED_PROXY",
    "DATABASE_URL",
    "REDIS_URL",
    "S3_BUCKET",
    "S3_ENDPOINT_URL",
    "S3_ACCESS_KEY_ID",
    "S3_SECRET_ACCESS_KEY",
}
NO_DEFAULT = object()
NAME = re.compile(r"^[A-Z][A-Z0-9_]*$")


# The code: which names it reads, and with which defaults.


@dataclass(frozen=True)
class EnvRead:
    name: str
    where: str
    default: Any


def _literal(node: ast.expr | None) -> Any:
    """The value of a constant expression (`7 * 24 * 3600`, `-1`, `"x"`), else NO_DEFAULT."""
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        value = _literal(node.operand)
        return NO_DEFAULT if value is NO_DEFAULT else -value
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add | ast.Sub | ast.Mult):
        left, right = _literal(node.left), _literal(node.right)
        if left is NO_DEFAULT or right is NO_DEFAULT:
            return NO_DEFAULT
        if isinstance(node.op, ast.Add):
            return left + right
        return left - right if isinstance(node.op, ast.Sub) else left * right
    return NO_DEFAULT


def _string_constants(tree: ast.Module) -> dict[str, str]:
    """Module-level `NAME = "TEXT"` assignments, e.g. THREADS_ENV = "PICTOR_TORCH_THREADS"."""
    found = {}
    for node in tree.body:
        targets = node.targets if isinstance(node, ast.Assign) else []
        if isinstance(node, ast.AnnAssign):
            targets = [node.target]
        value = getattr(node, "value", None)
        if isinstance(value, ast.Constant) and isinstance(value.value, str):
            for target in targets:
                if isinstance(target, ast.Name):
                    found[target.id] = value.value
    return found


def _is_environ(node: ast.expr) -> bool:
    if isinstance(node, ast.Attribute):
        return node.attr == "environ" and isinstance(node.value, ast.Name) and node.value.id == "os"
    return isinstance(node, ast.Name) and node.id == "environ"


def _sources() -> list[Path]:
    paths = []
    for entry in SCANNED:
        path = ROOT / entry
        paths += sorted(path.rglob("*.py")) if path.is_dir() else [path]
    return [p for p in paths if p != ROOT / "sdplatform" / "env.py"]


@functools.cache
def env_reads() -> tuple[tuple[EnvRead, ...], tuple[str, ...]]:
    """Every environment read in Pictor's code, and the reads whose name the scan cannot tell."""
    trees = {path: ast.parse(path.read_text(), str(path)) for path in _sources()}
    local = {path: _string_constants(tree) for path, tree in trees.items()}
    # Constants imported from another module (`from ...cache import CACHE_SIZE_ENV`).
    shared: dict[str, set[str]] = {}
    for constants in local.values():
        for key, value in constants.items():
            shared.setdefault(key, set()).add(value)

    reads: list[EnvRead] = []
    unnamed: list[str] = []
    for path, tree in trees.items():

        def name_of(node: ast.expr) -> str | None:
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                return node.value
            key = node.id if isinstance(node, ast.Name) else getattr(node, "attr", None)
            if isinstance(node, ast.Name) and key in local[path]:  # noqa: B023
                return local[path][key]  # noqa: B023
            values = shared.get(key or "", set())
            return next(iter(values)) if len(values) == 1 else None

        for node in ast.walk(tree):
            where = f"{path.relative_to(ROOT)}:{getattr(node, 'lineno', 0)}"
            target: ast.expr | None = None
            default: Any = NO_DEFAULT
            if isinstance(node, ast.Call) and node.args:
                func = node.func
                called = func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")
                if called in READERS:
                    target = node.args[0]
                    if len(node.args) > 1:
                        default = _literal(node.args[1])
                    elif called == "envstr":
                        default = ""
                elif isinstance(func, ast.Attribute) and (
                    (func.attr in ("get", "setdefault") and _is_environ(func.value))
                    or (func.attr == "getenv" and getattr(func.value, "id", "") == "os")
                ):
                    target = node.args[0]
            elif isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Load):
                if _is_environ(node.value):
                    target = node.slice
            elif isinstance(node, ast.Compare) and len(node.ops) == 1:
                if isinstance(node.ops[0], ast.In | ast.NotIn) and _is_environ(node.comparators[0]):
                    target = node.left
            if target is None:
                continue
            name = name_of(target)
            if name is None:
                unnamed.append(f"{where}: {ast.unparse(target)}")
            else:
                reads.append(EnvRead(name, where, default))
    return tuple(reads), tuple(unnamed)


def settings_read() -> dict[str, list[EnvRead]]:
    """The settings the code reads, by name."""
    found: dict[str, list[EnvRead]] = {}
    for read in env_reads()[0]:
        if read.name not in NOT_SETTINGS:
            found.setdefault(read.name, []).append(read)
    return found


# The recipes.


@dataclass(frozen=True)
class ExampleLine:
    value: str
    is_set: bool
    comment: str


def env_example() -> dict[str, ExampleLine]:
    """deploy/pictor.env.example: `NAME=value` (set) or `# NAME=value` (the default), each under
    a one-line comment."""
    entries: dict[str, ExampleLine] = {}
    previous = ""
    for number, raw in enumerate(ENV_EXAMPLE.read_text().splitlines(), 1):
        line = raw.strip()
        match = re.match(r"^(#\s*)?([A-Z][A-Z0-9_]*)=(.*)$", line)
        if match:
            name = match[2]
            assert name not in entries, f"pictor.env.example:{number}: {name} is listed twice"
            comment = previous.lstrip("#").strip()
            assert (
                previous.startswith("#") and comment and not re.match(r"^[A-Z0-9_]+=", comment)
            ), f"pictor.env.example:{number}: {name} needs a one-line comment above it"
            entries[name] = ExampleLine(match[3], is_set=not match[1], comment=comment)
        else:
            assert not line or line.startswith("#"), f"pictor.env.example:{number}: {raw!r}"
        previous = line
    return entries


def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def unit(path: Path) -> dict[str, list[tuple[str, str]]]:
    """A systemd unit as {section: [(key, value), …]}; keys may repeat (Environment=)."""
    sections: dict[str, list[tuple[str, str]]] = {}
    current = None
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), [])
            continue
        key, sep, value = line.partition("=")
        assert current is not None and sep, f"{path.name}: {raw!r}"
        current.append((key.strip(), value.strip()))
    return sections


def service(path: Path) -> dict[str, list[str]]:
    """A unit's [Service] section as {key: [values]}."""
    found: dict[str, list[str]] = {}
    for key, value in unit(path)["Service"]:
        found.setdefault(key, []).append(value)
    return found


def unit_environment(path: Path) -> dict[str, str]:
    return dict(value.split("=", 1) for value in service(path).get("Environment", []))


def dockerfile() -> list[tuple[str, str]]:
    """The Dockerfile's instructions as (INSTRUCTION, arguments), continuation lines joined."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    instructions = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            instructions.append((word.upper(), rest.strip()))
    return instructions


def docker_assignments(instruction: str) -> dict[str, str]:
    """The NAME=value pairs of the Dockerfile's ENV (or ARG) instructions."""
    found = {}
    for word, rest in dockerfile():
        if word == instruction:
            for pair in rest.split():
                name, _, value = pair.partition("=")
                found[name] = value
    return found


def references(text: str) -> set[str]:
    """Names a shell or compose would expand: `$NAME`, `${NAME}`, `${NAME:-x}`; not `$$NAME`."""
    return set(re.findall(r"(?<!\$)\$\{?([A-Za-z_][A-Za-z0-9_]*)", text))


def compose_environment(spec: dict[str, Any]) -> dict[str, str]:
    environment = spec.get("environment") or {}
    if isinstance(environment, list):
        environment = dict(item.split("=", 1) for item in environment)
    return {key: str(value) for key, value in environment.items()}


def as_command(value: Any) -> str:
    return " ".join(value) if isinstance(value, list) else str(value or "")


def recipe_commands() -> dict[str, str]:
    """Every command line the recipes run, by where it is."""
    commands = {}
    for name, spec in compose()["services"].items():
        commands[f"compose {name} command"] = as_command(spec.get("command"))
        test = (spec.get("healthcheck") or {}).get("test")
        commands[f"compose {name} healthcheck"] = as_command(test)
    for word, rest in dockerfile():
        if word in ("RUN", "CMD"):
            commands[f"Dockerfile {word} {rest[:30]}"] = as_command(
                yaml.safe_load(rest) if rest.startswith("[") else rest
            )
    for path in (WEB_UNIT, WORKER_UNIT):
        for key, values in service(path).items():
            if key.startswith("Exec"):
                commands[f"{path.name} {key}"] = " ".join(values)
    return commands


def readme_code() -> str:
    """The code in deploy/README.md: fenced blocks and inline spans."""
    text = (DEPLOY / "README.md").read_text()
    blocks = re.findall(r"```[^\n]*\n(.*?)```", text, re.S)
    spans = re.findall(r"`([^`\n]+)`", re.sub(r"```.*?```", "", text, flags=re.S))
    return "\n".join(blocks + spans)


def seconds(duration: str) -> float:
    """A compose or systemd duration ("2m", "6m30s", "390") in seconds."""
    parts = re.findall(r"(\d+(?:\.\d+)?)(h|m|s|ms)?", str(duration).replace(" ", ""))
    scale = {"h": 3600, "m": 60, "s": 1, "ms": 0.001, "": 1}
    return sum(float(number) * scale[unit] for number, unit in parts)


def code_default(name: str) -> Any:
    (default,) = {read.default for read in settings_read()[name]}
    return default


def gpu_workers() -> dict[str, dict[str, Any]]:
    return {k: v for k, v in compose()["services"].items() if k.startswith("worker-gpu")}


# The environment: names.


def test_it_finds_env_reads_through_module_constants_and_names_every_read():
    names = settings_read()
    for name in (
        "PICTOR_TORCH_THREADS",
        "PICTOR_PIPELINE_CACHE_SIZE",
        "PICTOR_PIPELINE_CACHE_BYTES",
    ):
        assert name in names, f"the scan missed {name}, read through a module constant"
    for name in ("SECRET_KEY", "PICTOR_BIND", "WEB_CONCURRENCY", "PICTOR_WORKER_STOP_GRACE"):
        assert name in names
    assert env_reads()[1] == (), f"reads whose name the scan cannot tell: {env_reads()[1]}"


def test_every_setting_the_code_reads_is_in_the_env_example():
    missing = sorted(set(settings_read()) - set(env_example()))
    assert not missing, f"add these to deploy/pictor.env.example: {missing}"


def test_every_name_the_recipes_set_is_read_by_pictor_or_a_named_program():
    build_args = set(docker_assignments("ARG"))
    known = set(settings_read()) | set(THIRD_PARTY) | build_args
    used: dict[str, set[str]] = {"pictor.env.example": set(env_example())}
    used["Dockerfile"] = set(docker_assignments("ENV")) | references(DOCKERFILE.read_text())
    used["compose.yaml"] = references(COMPOSE.read_text())
    for name, spec in compose()["services"].items():
        used["compose.yaml"] |= set(compose_environment(spec))
        args = (spec.get("build") or {}).get("args") or {}
        assert set(args) <= build_args, f"{name} passes build args the Dockerfile lacks: {args}"
    for path in (WEB_UNIT, WORKER_UNIT):
        used[path.name] = set(unit_environment(path)) | references(path.read_text())
    for where, names in used.items():
        unknown = sorted(names - known)
        assert not unknown, f"{where} sets names nothing reads: {unknown}"


def test_the_env_example_sets_what_a_deployment_must_set():
    example = env_example()
    unset = sorted(name for name in MUST_SET if not example[name].is_set)
    assert not unset, f"a deployment must set these; uncomment them in the example: {unset}"
    assert example["DJANGO_ENV"].value == "production"
    # Per-process values come from the unit or the service; the env file would override them.
    for name in ("CUDA_VISIBLE_DEVICES", "PICTOR_WORKERS"):
        assert name not in example or not example[name].is_set, name


def test_the_env_example_gives_the_code_s_own_defaults():
    example = env_example()
    for name, reads in settings_read().items():
        defaults = {read.default for read in reads} - {NO_DEFAULT}
        entry = example.get(name)
        if entry is None or entry.is_set or len(defaults) != 1:
            continue
        (default,) = defaults
        value = entry.value
        if isinstance(default, bool):
            assert (value.lower() in ("1", "true", "yes", "on")) == default, (name, value)
        elif isinstance(default, int | float):
            assert value and float(value) == default, (name, value, default)
        else:
            assert value == default, (name, value, default)


def test_every_setting_is_in_the_configuration_page_table():
    lines = CONFIGURATION.read_text().splitlines()
    # The settings table is the page's first run of `|` lines; its first column names them.
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    rows = set()
    for line in itertools.takewhile(lambda line: line.startswith("|"), lines[start:]):
        rows |= set(re.findall(r"`([A-Z][A-Z0-9_]*)`", line.split("|")[1]))
    missing = sorted(set(settings_read()) - rows)
    assert not missing, f"add rows to docs/configuration.md's table for {missing}"


# The commands the recipes run.


def test_the_manage_py_commands_the_recipes_run_exist():
    from django.core.management import get_commands

    commands = get_commands()
    run = {"worker", "migrate", "collectstatic"}
    for where, line in {**recipe_commands(), "deploy/README.md": readme_code()}.items():
        # `pictor <command>` is deploy/README.md's helper around manage.py on systemd hosts.
        for name in re.findall(r"(?:manage\.py|^pictor)\s+([a-z_][a-z0-9_]*)", line, re.M):
            assert name in commands, f"{where} runs `manage.py {name}`, which does not exist"
            run.discard(name)
    assert not run, f"the recipes never run {run}"
    assert "build_demo_models" in readme_code()


def test_the_gunicorn_config_and_application_the_recipes_name_exist():
    makefile = (ROOT / "Makefile").read_text()
    invocations = [line for line in recipe_commands().values() if re.search(r"\bgunicorn\b", line)]
    assert len(invocations) >= 3, "the image, compose's web and the web unit all run gunicorn"
    for line in invocations:
        match = re.search(r"gunicorn -c python:([\w.]+) ([\w.]+)(?::(\w+))?$", line)
        assert match, f"gunicorn is not run as `make run` runs it: {line!r}"
        assert f"gunicorn -c python:{match[1]} {match[2]}" in makefile
        config = importlib.import_module(match[1])
        assert config.bind and config.graceful_timeout > 0
        assert callable(getattr(importlib.import_module(match[2]), match[3] or "application"))


def test_the_make_targets_deploy_names_exist():
    makefile = (ROOT / "Makefile").read_text()
    targets = set(re.findall(r"^([a-z][\w-]*(?: [a-z][\w-]*)*):", makefile, re.M))
    targets = {target for line in targets for target in line.split()}
    text = "\n".join([readme_code(), DOCKERFILE.read_text(), COMPOSE.read_text()])
    for target in re.findall(r"(?:^|[\s;&(`])make ([a-z][\w-]*)", text, re.M):
        assert target in targets, f"deploy/ names `make {target}`, not a Makefile target"


# Workers and GPUs.


def test_each_gpu_worker_service_runs_the_worker_on_a_gpu_of_its_own():
    workers = gpu_workers()
    assert len(workers) >= 2
    devices = []
    for name, spec in workers.items():
        assert as_command(spec["command"]) == "python manage.py worker", name
        environment = compose_environment(spec)
        assert environment["PICTOR_WORKERS"] == "1", name
        devices.append(environment["CUDA_VISIBLE_DEVICES"])
        assert name == f"worker-gpu{environment['CUDA_VISIBLE_DEVICES']}"
        (reservation,) = spec["deploy"]["resources"]["reservations"]["devices"]
        assert "gpu" in reservation["capabilities"], name
        assert any(v.endswith(":/models") for v in spec["volumes"]), name
    assert len(set(devices)) == len(devices), f"two workers share a GPU: {devices}"


def test_the_worker_unit_takes_its_gpu_from_the_instance_name():
    assert unit_environment(WORKER_UNIT)["CUDA_VISIBLE_DEVICES"] == "%i"
    assert unit_environment(WORKER_UNIT)["PICTOR_WORKERS"] == "1"
    assert service(WORKER_UNIT)["Restart"] == ["on-failure"]


# Stopping.


def test_stops_wait_longer_than_the_grace_the_code_gives():
    from generation.management.commands.worker import STOP_MARGIN
    from sdplatform.gunicorn import GRACE_MARGIN

    web_grace = code_default("PICTOR_BLOCKING_WAIT") + GRACE_MARGIN
    worker_grace = code_default("PICTOR_WORKER_STOP_GRACE") + STOP_MARGIN
    for path, grace in ((WEB_UNIT, web_grace), (WORKER_UNIT, worker_grace)):
        settings = service(path)
        assert seconds(settings["TimeoutStopSec"][0]) > grace, path.name
        assert settings["KillSignal"] == ["SIGTERM"], path.name
        # SIGTERM to the main process alone, which coordinates the stop; a SIGTERM to every
        # process (control-group) would kill django-q2's sentinel and the running job at once.
        assert settings["KillMode"] == ["mixed"], path.name
    services = compose()["services"]
    assert seconds(services["web"]["stop_grace_period"]) > web_grace
    for name, spec in gpu_workers().items():
        assert seconds(spec["stop_grace_period"]) > worker_grace, name


# The units.


def test_the_units_read_the_env_file_and_run_from_the_make_install_venv():
    venv = re.search(r"^VENV := (\S+)$", (ROOT / "Makefile").read_text(), re.M)[1]
    for path in (WEB_UNIT, WORKER_UNIT):
        settings = service(path)
        assert settings["EnvironmentFile"] == ["/etc/pictor/pictor.env"], path.name
        assert settings["User"] != ["root"], path.name
        program = settings["ExecStart"][0].split()[0]
        assert program.startswith(f"{settings['WorkingDirectory'][0]}/{venv}/bin/"), path.name
    assert service(WORKER_UNIT)["ExecStart"][0].endswith("/python manage.py worker")


# The image.


def test_the_image_installs_the_lock_with_the_makefile_s_torch():
    lock_torch = re.search(
        r"^torch==([\d.]+)\+cpu$", (ROOT / "requirements.lock").read_text(), re.M
    )
    make_torch = re.search(r'echo "torch==([\d.]+)"', (ROOT / "Makefile").read_text())
    args = docker_assignments("ARG")
    assert args["TORCH_VERSION"] == make_torch[1] == lock_torch[1]
    assert args["TORCH_VARIANT"] == "cpu"
    assert args["TORCH_INDEX"] == "https://download.pytorch.org/whl/${TORCH_VARIANT}"
    install = " ".join(rest for word, rest in dockerfile() if word == "RUN" and "pip " in rest)
    assert "requirements.lock" in install and "--no-deps -r" in install and "pip check" in install
    assert '"torch==${TORCH_VERSION}+${TORCH_VARIANT}"' in install
    assert '--index-url "${TORCH_INDEX}"' in install


def test_the_image_runs_unprivileged_serves_on_every_interface_and_downloads_no_model():
    instructions = dockerfile()
    assert instructions[0] == ("FROM", "python:3.11-slim")
    users = [rest for word, rest in instructions if word == "USER"]
    assert users and users[-1] not in ("root", "0")
    environment = docker_assignments("ENV")
    assert environment["PICTOR_BIND"] == "0.0.0.0:8000"
    assert environment["HF_HUB_OFFLINE"] == "1"
    assert environment["PICTOR_MODELS_DIR"] == "/models"
    runs = " ".join(rest for word, rest in instructions if word == "RUN")
    assert "collectstatic" in runs
    for download in ("build_demo_models", "huggingface", "from_pretrained", "curl ", "wget "):
        assert download not in runs, download


def test_the_build_context_leaves_out_local_state_and_secrets():
    ignored = set((ROOT / ".dockerignore").read_text().split())
    assert {".venv", "var", ".git", ".pytest_cache", "deploy/pictor.env"} <= ignored


# Compose.


def test_compose_web_waits_for_migrate_and_is_healthy_when_readyz_is():
    services = compose()["services"]
    assert as_command(services["migrate"]["command"]).startswith("python manage.py migrate")
    assert services["migrate"]["restart"] == "no"
    for name in ["web", *gpu_workers()]:
        condition = services[name]["depends_on"]["migrate"]["condition"]
        assert condition == "service_completed_successfully", name
    assert "/readyz" in as_command(services["web"]["healthcheck"]["test"])
    for name in ("postgres", "redis", "minio"):
        assert services[name]["healthcheck"], name
    assert {"pgdata", "miniodata", "models"} <= set(compose()["volumes"])


def test_compose_reads_the_example_env_and_creates_its_bucket():
    example = env_example()
    services = compose()["services"]
    for name in ["migrate", "web", *gpu_workers()]:
        files = [f if isinstance(f, str) else f["path"] for f in services[name]["env_file"]]
        assert files[0] == ENV_EXAMPLE.name, name
    bucket = as_command(services["createbuckets"]["command"])
    assert f"/{example['S3_BUCKET'].value}" in bucket
    assert "mc mb" in bucket


# Production settings.


def test_check_deploy_is_clean_for_the_documented_production_environment(tmp_path):
    example = {name: line.value for name, line in env_example().items() if line.is_set}
    # Nothing of this test run's own settings, only the example's (its commented lines are the
    # defaults); its secret left empty there, its services swapped for the local ones.
    inherited = {k: v for k, v in os.environ.items() if k not in settings_read()}
    env = {
        **inherited,
        **example,
        "SECRET_KEY": secrets.token_urlsafe(50),
        "S3_SECRET_ACCESS_KEY": "test",
        "DATABASE_URL": "postgres://postgres@127.0.0.1:5432/test",
        "REDIS_URL": "redis://127.0.0.1:6379/15",
        "PICTOR_VAR_DIR": str(tmp_path),
        "DJANGO_SETTINGS_MODULE": "sdplatform.settings",
    }
    assert env["DJANGO_ENV"] == "production"
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout, result.stdout


def test_the_recipes_name_the_public_host_and_reach_gunicorn_only_through_the_proxy():
    from django.conf import settings

    example = env_example()
    base = urlsplit(example["PICTOR_BASE_URL"].value)
    hosts = example["ALLOWED_HOSTS"].value.split(",")
    assert base.scheme == "https" and base.hostname in hosts
    # The compose healthcheck calls gunicorn by a host it answers, on a path that is not
    # redirected to https (it speaks plain HTTP inside the container).
    probe = re.search(
        r"https?://[^'\"\s]+", as_command(compose()["services"]["web"]["healthcheck"]["test"])
    )
    probe_url = urlsplit(probe[0])
    assert probe_url.hostname in hosts
    path = probe_url.path.lstrip("/")
    assert any(re.search(pattern, path) for pattern in settings.SECURE_REDIRECT_EXEMPT), path
    # X-Forwarded-* are believed, so nothing but the proxy may reach gunicorn: compose publishes
    # it on the host's loopback, the web unit keeps the loopback default bind.
    assert example["PICTOR_TRUSTED_PROXY"].value == "true"
    for port in compose()["services"]["web"]["ports"]:
        assert str(port).startswith("127.0.0.1:"), port
    assert "PICTOR_BIND" not in unit_environment(WEB_UNIT)
    assert "PICTOR_BIND" not in example or not example["PICTOR_BIND"].is_set
    assert code_default("PICTOR_BIND").startswith("127.0.0.1:")
