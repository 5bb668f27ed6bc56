"""The committed lock is the install: exact pins that satisfy pyproject, and what is installed.

`make install` installs requirements.lock with --no-deps and then runs `pip check`, so a
transitive dependency missing from the lock fails the install; these tests catch the rest: a
pyproject range the lock no longer satisfies, a loose pin, or a venv that drifted from the lock.
"""

from __future__ import annotations

import re
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
PIN = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)==(?P<version>\S+)$")


def locked() -> dict[str, Version]:
    pins: dict[str, Version] = {}
    for number, raw in enumerate((ROOT / "requirements.lock").read_text().splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        match = PIN.match(line)
        assert match, f"requirements.lock:{number}: {raw!r} is not an exact name==version pin"
        pins[canonicalize_name(match["name"])] = Version(match["version"])
    return pins


def declared() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    lines = project["dependencies"] + project["optional-dependencies"]["dev"]
    return [Requirement(line) for line in lines]


def test_the_lock_pins_every_declared_dependency_within_its_range():
    pins = locked()
    for requirement in declared():
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{requirement} is in pyproject.toml but not in requirements.lock"
        assert requirement.specifier.contains(pins[name], prereleases=True), (
            f"requirements.lock pins {name}=={pins[name]}, outside pyproject's {requirement}; "
            "run `make lock` and the whole suite"
        )


def test_the_lock_pins_the_cpu_torch_the_build_hosts_carry():
    assert locked()["torch"] == Version("2.13.0+cpu")


def test_the_installed_packages_are_the_locked_versions():
    """What runs the tests is what the lock says, so a green run vouches for the lock."""
    drifted = {}
    for name, version in locked().items():
        try:
            installed = Version(metadata.version(name))
        except metadata.PackageNotFoundError:
            drifted[name] = "missing"
            continue
        if installed != version:
            drifted[name] = f"{installed} installed, {version} locked"
    assert not drifted, f"the venv is not the lock (run `make install`): {drifted}"


def lock_graph() -> dict[str, set[str]]:
    """{pinned package: the names uv's comments say it is there for}; the project is "pictor"."""
    graph: dict[str, set[str]] = {}
    current = ""
    for raw in (ROOT / "requirements.lock").read_text().splitlines():
        pin = PIN.match(raw.split("#", 1)[0].strip())
        if pin:
            current = canonicalize_name(pin["name"])
            graph[current] = set()
            via = raw.partition("# via")[2].strip()  # "# via x" on the pin's own line
        else:
            via = raw.strip().removeprefix("#").strip().removeprefix("via").strip()
        if current and via and not via.startswith("-c "):
            graph[current].add(canonicalize_name(via.split(" (", 1)[0]))
    return graph


def test_every_pin_is_there_for_a_declared_dependency():
    """A dependency dropped from pyproject (without `make lock`) leaves no pin behind."""
    graph = lock_graph()
    wanted = {canonicalize_name(r.name) for r in declared()}
    said_direct = {name for name, via in graph.items() if "pictor" in via}
    assert said_direct == wanted, (
        f"the lock says these come from pyproject: {sorted(said_direct ^ wanted)} disagree; "
        "run `make lock`"
    )
    needed, todo = set(wanted), list(wanted)
    while todo:
        name = todo.pop()
        for child, via in graph.items():
            if name in via and child not in needed:
                needed.add(child)
                todo.append(child)
    assert set(graph) == needed, f"pinned but needed by nothing declared: {set(graph) - needed}"
