"""hack/vm's own command line: what a user gets wrong is one line and exit status 125, before anything
is downloaded or booted (booting is tests/vm/)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

VM = Path(__file__).resolve().parent.parent / "hack" / "vm"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--share", "/nonexistent-oomsight-dir"],
            "vm: error: --share /nonexistent-oomsight-dir: not a directory",
        ),
        (["--mem", "lots"], "vm: error: --mem 'lots': give a size like 512M or 2G"),
    ],
)
def test_bad_run_arguments_are_one_line(args: list[str], message: str) -> None:
    proc = subprocess.run(
        [str(VM), "run", "--kernel", "6.1", *args, "--", "true"], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 125
    assert proc.stderr.splitlines() == [message]
    assert proc.stdout == ""


def test_no_command_is_one_line() -> None:
    proc = subprocess.run([str(VM), "run", "--kernel", "6.1"], capture_output=True, text=True, check=False)
    assert proc.returncode == 125
    assert proc.stderr.splitlines() == ["vm: error: no command: hack/vm run --kernel 6.1 -- COMMAND..."]


def test_unknown_kernel_is_refused_by_the_parser() -> None:
    proc = subprocess.run(
        [str(VM), "run", "--kernel", "4.19", "--", "true"], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 2 and "invalid choice: '4.19'" in proc.stderr
