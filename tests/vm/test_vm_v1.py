"""Today's real-kernel v1 suite (real OOM kills, the cgroupfs walker) inside hack/vm guests booted
with ``--cgroup v1``: the same tests on Debian's 5.10 and 6.1 as on this machine's 6.18.

Debian's 6.12 is built without ``CONFIG_MEMCG_V1`` (6.11 moved the v1 memory controller behind it),
so there ``hack/vm --cgroup v1`` refuses with one line, which is asserted instead.
"""

from __future__ import annotations

import os
import subprocess

import pytest

from realparts import unavailable
from vm.test_vm_v2 import KERNELS, REPO, vm_lib

pytestmark = pytest.mark.vm

V1_SUITE = ("tests/test_oom_real.py", "tests/test_cgroupfs_real.py")
NOT_UNDER_TCG = "not test_kills_the_log_does_not_explain_are_counted"
"""That test needs 14 kills inside the kernel's 5 s report ratelimit (mm/oom_kill.c oom_rs) so that
some have no report; under TCG the kills take longer and every one is reported (seen on 6.1)."""


def _require_vm(series: str) -> None:
    vm = vm_lib()
    try:
        vm.ensure_host_tools()
        vm.check_tcg()
        vm.kernel(series)
    except vm.VmError as err:
        unavailable(f"hack/vm cannot run {series}: {err}")


@pytest.mark.parametrize("series", [k for k in KERNELS if k != "6.12"])
def test_v1_real_kernel_suite_passes_in_the_guest(series: str) -> None:
    _require_vm(series)
    proc = subprocess.run(
        [
            str(REPO / "hack" / "vm"), "run", "--kernel", series, "--cgroup", "v1", "--mem", "1G", "--",
            "python3", "-m", "pytest", "-q", "-p", "no:cacheprovider", "-x", "-k", NOT_UNDER_TCG, *V1_SUITE,
        ],
        cwd=REPO, capture_output=True, text=True, check=False, timeout=1800,
        env={**os.environ, "CI": "true"},  # in the guest a missing v1 controller must fail, not skip
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert " passed" in proc.stdout and "skipped" not in proc.stdout


@pytest.mark.skipif("6.12" not in KERNELS, reason="6.12 not in OOMSIGHT_VM_KERNELS")
def test_v1_on_a_kernel_without_memcg_v1_is_one_clear_line() -> None:
    _require_vm("6.12")
    proc = subprocess.run(
        [str(REPO / "hack" / "vm"), "run", "--kernel", "6.12", "--cgroup", "v1", "--", "true"],
        capture_output=True, text=True, check=False, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 125
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "CONFIG_MEMCG_V1" in lines[0] and "--cgroup v2" in lines[0], proc.stderr
