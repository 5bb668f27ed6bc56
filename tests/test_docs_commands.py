"""The shell lines of the docs (```sh blocks outside docs/api/) name commands that exist, with
options they take: a renamed command, target, flag or test path fails here.

The API pages' ```bash blocks run against a live stack instead (test_docs_examples.py). These
lines are not run: they import models, start servers or install packages. So each is checked
against what would run it: a `manage.py` line against its command's own argument parser, a
`make` line against the Makefile's targets and variables, a bench script's flags against its
parser, a pytest line's paths against the tree.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
from django.core.management import get_commands, load_command_class

from tests.processes import ROOT

DOCS = sorted(p for p in (ROOT / "docs").glob("*.md"))
SH_BLOCK = re.compile(r"^```sh\n(.*?)^```$", re.MULTILINE | re.DOTALL)
PYTHON = ".venv/bin/python"
# Lines a reader runs that are not Pictor's to check.
NOT_OURS = ("sudo ", "export ")


def shell_lines() -> list[tuple[str, str]]:
    """(page:line, command) for every command line of a ```sh block, its comment taken off."""
    found = []
    for page in DOCS:
        text = page.read_text()
        for block in SH_BLOCK.finditer(text):
            first = text.count("\n", 0, block.start(1)) + 1
            for offset, line in enumerate(block.group(1).splitlines()):
                command = line.split(" #", 1)[0].strip()
                if command and not command.startswith("#"):
                    found.append((f"{page.name}:{first + offset}", command))
    return found


def words(command: str) -> list[str]:
    """The command's words, `[optional]` parts kept as if given (the brackets only mark them)."""
    return [word.strip("[]") for word in shlex.split(command) if word.strip("[]")]


LINES = shell_lines()


def test_the_docs_have_shell_lines_to_check():
    # A change of the fence (```sh) would leave this test checking nothing.
    assert len(LINES) > 20
    kinds = {words(command)[0] for _, command in LINES}
    assert {"manage.py", "make", PYTHON} <= kinds


@pytest.mark.parametrize(("where", "command"), LINES, ids=[where for where, _ in LINES])
def test_a_documented_shell_line_names_what_exists(where: str, command: str):
    argv = words(command)
    if argv[0] == PYTHON:
        argv = argv[1:]
    if command.startswith(NOT_OURS):
        return
    if argv[0] == "manage.py":
        check_manage(argv[1], argv[2:])
    elif argv[0] == "make":
        check_make(argv[1:])
    elif argv[0].startswith("bench/"):
        check_bench(argv[0], argv[1:])
    elif argv[:2] == ["-m", "pytest"]:
        check_pytest(argv[2:])
    else:
        pytest.fail(f"{where}: no check for {command!r}; add one here")


def check_manage(name: str, args: list[str]) -> None:
    app = get_commands().get(name)
    assert app is not None, f"no manage.py command {name!r}"
    parser = load_command_class(app, name).create_parser("manage.py", name)
    # argparse exits (SystemExit) on an unknown option or a missing argument.
    parser.parse_args(args)


def check_make(args: list[str]) -> None:
    makefile = (ROOT / "Makefile").read_text()
    target, *variables = args
    assert re.search(rf"^{re.escape(target)}:", makefile, re.MULTILINE), f"no make {target}"
    for assignment in variables:
        name = assignment.split("=", 1)[0]
        assert f"$({name})" in makefile, f"the Makefile does not use {name}"


def check_bench(script: str, args: list[str]) -> None:
    path = ROOT / script
    assert path.is_file(), f"no {script}"
    source = path.read_text()
    for flag in (arg for arg in args if arg.startswith("--")):
        assert f'add_argument("{flag}"' in source, f"{script} takes no {flag}"


def check_pytest(args: list[str]) -> None:
    options_with_values = {"-k", "-m"}
    paths = [
        arg
        for previous, arg in zip(["", *args], args, strict=False)
        if not arg.startswith("-") and previous not in options_with_values
    ]
    for path in paths:
        assert (ROOT / Path(path)).exists(), f"no {path}"
