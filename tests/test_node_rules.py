"""Node checks, table-driven over captured/assembled host roots in tests/fixtures/node/<case>/.

Each case directory is a host root (proc/..., sys/...) with a SOURCE note saying which kernel it is and
where every file came from. The whole path runs: files -> ``read_node_facts`` -> ``node_findings``.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from oomsight.core.errors import ParseError
from oomsight.core.findings import Finding
from oomsight.core.node import (
    V1_ONLY_FINDINGS,
    V2_ONLY_FINDINGS,
    MemoryCgroups,
    NodeFacts,
    dying_memcgs_v2,
    node_findings,
    parse_cgroup_stat,
    parse_cmdline,
    parse_kernel_release,
    parse_meminfo,
    parse_overcommit,
    parse_pressure,
    parse_proc_cgroups,
    parse_thp_mode,
    pod_swap,
)
from oomsight.core.quantity import prose_bytes
from oomsight.host.errors import WrongHostRoot
from oomsight.host.nodeinfo import read_node_facts

FIXTURES = Path(__file__).parent / "fixtures" / "node"

CASES = {
    # case: (kernel, cgroup_version, driver, kmem_accounting, (counted, live, dying), {finding id: severity})
    "hybrid-6.18-this-machine": (
        "6.18.44-fc-v657", "hybrid", "unknown", True, (50, 11, 39),
        {"kmem-accounting-on": "info", "memcg-dying": "info", "swap-off": "info"},
    ),
    "centos7-3.10-kmem-leak": (
        "3.10.0-693.17.1.el7.x86_64", "v1", "cgroupfs", True, (64734, 9, 64725),
        {
            "kmem-leak-kernel": "critical",
            "memcg-id-limit": "critical",
            "kernel-old-memcg": "warning",
            "kmem-accounting-on": "warning",
            "memcg-dying": "warning",
            "swap-off": "info",
            "thp-always": "info",
            "overcommit-always": "info",
            "psi-unavailable": "info",
        },
    ),
    "rhel7.9-3.10-nokmem": (
        "3.10.0-1160.el7.x86_64", "v1", "systemd", False, (34, 9, 25),
        {
            "kernel-old-memcg": "warning",
            "memcg-dying": "info",
            "swap-on": "warning",
            "thp-always": "info",
            "overcommit-always": "info",
            "psi-unavailable": "info",
        },
    ),
    "debian-5.10-v2-vm": (
        "5.10.0-32-amd64", "v2", "unknown", True, (15, 1, 14),
        {
            "memory-pressure": "warning",
            "kmem-accounting-on": "info",
            "memcg-dying": "info",
            "swap-off": "info",
            "thp-always": "info",
        },
    ),
    "debian-6.12-v2-vm": (
        "6.12.117+deb13-amd64", "v2", "unknown", True, (14, 1, 13),
        {
            "kmem-accounting-on": "info",
            "memcg-dying": "info",
            "swap-off": "info",
            "thp-always": "info",
        },
    ),
    "debian-6.1-v2-vm-swap": (
        # two kubepods trees side by side (cgroupfs and systemd names): the driver is the first listed
        "6.1.0-50-amd64", "v2", None, True, (15, 15, 0),
        {"swap-unlimited": "warning", "kmem-accounting-on": "info", "swap-on": "info"},
    ),
    "debian-6.1-v2-vm": (
        "6.1.0-50-amd64", "v2", "unknown", True, (14, 1, 13),
        {
            "kmem-accounting-on": "info",
            "memcg-dying": "info",
            "swap-off": "info",
            "thp-always": "info",
        },
    ),
}


def test_every_fixture_has_a_source_note() -> None:
    cases = sorted(p.name for p in FIXTURES.iterdir() if p.is_dir())
    assert cases == sorted(CASES)
    for case in cases:
        source = (FIXTURES / case / "SOURCE").read_text()
        assert source.startswith("kernel: "), case
        assert "http" in source or "captured" in source, case


@pytest.mark.parametrize("case", sorted(CASES))
def test_fixture_facts_and_findings(case: str) -> None:
    kernel, version, driver, kmem, (counted, live, dying), expected = CASES[case]
    facts = read_node_facts(FIXTURES / case)
    assert facts.errors == ()
    assert facts.kernel is not None and facts.kernel.release == kernel
    assert facts.cgroup_version == version
    assert facts.driver == driver or driver is None
    assert facts.kmem_accounting is kmem
    assert facts.memory_cgroups == MemoryCgroups(counted=counted, live=live, dying=dying)
    findings = node_findings(facts)
    assert {f.id: f.severity for f in findings} == expected
    ranks = [f.rank for f in findings]
    assert ranks == sorted(ranks, reverse=True)  # most urgent first
    for f in findings:
        assert f.message.endswith(".") and f.evidence
        if f.severity != "info":
            assert f.fix, f.id


def test_swap_from_the_containers_memory_swap_max_on_a_real_v2_guest() -> None:
    """tests/fixtures/node/debian-6.1-v2-vm-swap/SOURCE: swap on, containers with swap.max max/16 MiB/0,
    each next to a sandbox cgroup with neither a memory limit nor a swap setting."""
    facts = read_node_facts(FIXTURES / "debian-6.1-v2-vm-swap")
    ps = facts.pod_swap
    assert ps is not None and ps.behaviour == "unlimited"
    assert (ps.containers, ps.unlimited, ps.unlimited_with_limit, ps.zero, ps.limited) == (6, 4, 1, 1, 1)
    assert ps.limited_bytes == 16 << 20 and ps.used_bytes == 23371776 + 3801088
    assert facts.swap_total_bytes == 98300 * 1024
    f = {x.id: x for x in node_findings(facts)}["swap-unlimited"]
    assert "1 of the 6 container cgroups have a memory limit and memory.swap.max 'max'" in f.message
    assert "25.9 MiB is swapped out now" in f.message and "kubelet" in f.fix


def test_leak_finding_cites_its_sources_and_numbers() -> None:
    findings = {f.id: f for f in node_findings(read_node_facts(FIXTURES / "centos7-3.10-kmem-leak"))}
    leak = findings["kmem-leak-kernel"]
    ev = dict(leak.evidence)
    assert ev["rhel_build"] == "693"
    assert ev["source"] == "https://github.com/kubernetes/kubernetes/issues/61937"
    assert "nokmem" in leak.fix
    ids = findings["memcg-id-limit"]
    assert "64734" in ids.message and "801 left" in ids.message


def _facts(**kw: object) -> NodeFacts:
    base: dict[str, object] = {
        "kernel": parse_kernel_release("5.15.0-91-generic"),
        "cgroup_version": "v1",
        "memory_version": "v1",
        "driver": "cgroupfs",
        "cmdline": parse_cmdline("ro quiet"),
        "memory_cgroups": MemoryCgroups(None, None, None),
    }
    base.update(kw)
    return NodeFacts(**base)  # type: ignore[arg-type]


def _ids(facts: NodeFacts) -> dict[str, str]:
    return {f.id: f.severity for f in node_findings(facts)}


@pytest.mark.parametrize(
    ("counted", "live", "expected"),
    [
        (20, 11, {"memcg-dying": "info"}),  # a few dying: normal
        (1400, 600, {"memcg-dying": "info"}),  # 800 dying but < 2x live
        (1300, 400, {"memcg-dying": "warning"}),  # 900 dying > 2x live and >= 500
        (450, 10, {"memcg-dying": "info"}),  # 440 dying: > 2x live but under the 500 floor
        (32768, 32768, {"memcg-id-limit": "warning"}),  # half the IDs, all live
        (58982, 100, {"memcg-id-limit": "critical", "memcg-dying": "warning"}),  # 90%
        (11, 11, {}),
    ],
)
def test_memcg_thresholds(counted: int, live: int, expected: dict[str, str]) -> None:
    facts = _facts(memory_cgroups=MemoryCgroups(counted, live, max(counted - live, 0)))
    got = {k: v for k, v in _ids(facts).items() if k.startswith("memcg")}
    assert got == expected


@pytest.mark.parametrize(
    ("release", "cmdline", "usage", "slab", "kmem", "leak"),
    [
        ("3.10.0-957.1.3.el7.x86_64", "ro", 5 << 20, True, True, "critical"),
        ("3.10.0-957.1.3.el7.x86_64", "ro", None, None, None, "warning"),  # cannot tell: warn
        ("3.10.0-957.1.3.el7.x86_64", "ro", 0, False, False, None),  # never activated
        ("3.10.0-957.1.3.el7.x86_64", "ro cgroup.memory=nosocket,nokmem", 5 << 20, True, False, None),
        ("3.10.0-1062.4.1.el7.x86_64", "ro", 5 << 20, True, True, "critical"),
        ("3.10.0-1075.el7.x86_64", "ro", 5 << 20, True, True, "info"),  # reported fixed
        ("3.10.0-1160.49.1.el7.x86_64", "ro", 5 << 20, True, True, "info"),
        ("4.18.0-348.el8.x86_64", "ro", 0, None, True, None),  # >= 4.6: always accounted
        ("5.4.0-1029-aws", "ro cgroup.memory=nokmem", None, None, False, None),
    ],
)
def test_kmem_leak_rule(
    release: str, cmdline: str, usage: int | None, slab: bool | None, kmem: bool | None, leak: str | None
) -> None:
    facts = _facts(
        kernel=parse_kernel_release(release),
        cmdline=parse_cmdline(cmdline),
        kmem_usage_bytes=usage,
        kmem_slabinfo_readable=slab,
    )
    assert facts.kmem_accounting is kmem
    assert _ids(facts).get("kmem-leak-kernel") == leak


@pytest.mark.parametrize(
    ("text", "release", "mmp", "build", "el"),
    [
        ("3.10.0-1062.el7.x86_64", "3.10.0-1062.el7.x86_64", (3, 10, 0), 1062, 7),
        ("3.10.0-1062.4.1.el7.x86_64\n", "3.10.0-1062.4.1.el7.x86_64", (3, 10, 0), 1062, 7),
        ("3.10.0-514.10.2.el7.x86_64", "3.10.0-514.10.2.el7.x86_64", (3, 10, 0), 514, 7),
        ("4.18.0-348.7.1.el8_5.x86_64", "4.18.0-348.7.1.el8_5.x86_64", (4, 18, 0), 348, 8),
        ("5.15.0-91-generic", "5.15.0-91-generic", (5, 15, 0), None, None),
        ("6.18.44-fc-v657", "6.18.44-fc-v657", (6, 18, 44), None, None),
        ("6.1", "6.1", (6, 1, 0), None, None),
        (
            "Linux version 6.18.44-fc-v657 (builder@sandboxing) (gcc (GCC) 15.3.0, GNU ld (GNU Binutils) "
            "2.46) #1 SMP PREEMPT_DYNAMIC @0",
            "6.18.44-fc-v657", (6, 18, 44), None, None,
        ),
    ],
)
def test_parse_kernel_release(text: str, release: str, mmp: tuple[int, int, int], build: int | None,
                              el: int | None) -> None:
    k = parse_kernel_release(text)
    assert (k.release, (k.major, k.minor, k.patch), k.rhel_build, k.el) == (release, mmp, build, el)


@pytest.mark.parametrize("bad", ["", "Linux", "garbage here", "v5.4"])
def test_parse_kernel_release_rejects(bad: str) -> None:
    with pytest.raises(ParseError, match="kernel release"):
        parse_kernel_release(bad)


def test_small_parsers() -> None:
    c = parse_cmdline("BOOT_IMAGE=/vmlinuz ro quiet cgroup.memory=nokmem psi=1 -- --init-arg x=1\n")
    assert c.nokmem and c.has("psi", "1") and c.has("ro") and not c.has("x")
    assert not parse_cmdline("cgroup.memory=nosocket").nokmem
    assert parse_thp_mode("always [madvise] never\n") == "madvise"
    assert parse_thp_mode("[always] madvise never") == "always"
    assert parse_overcommit("2\n") == 2
    mi = parse_meminfo("MemTotal:  1000 kB\nSwapTotal:  2048 kB\nHugePages_Total:       4\n")
    assert mi == {"MemTotal": 1024000, "SwapTotal": 2048 * 1024, "HugePages_Total": 4}
    p = parse_pressure(
        "some avg10=1.50 avg60=0.25 avg300=0.00 total=123\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=7\n"
    )
    assert p.some.avg10 == 1.5 and p.full is not None and p.full.total_us == 7
    st = parse_cgroup_stat(
        "nr_descendants 3\nnr_subsys_memory 4\nnr_dying_descendants 9\nnr_dying_subsys_memory 2\n"
    )
    assert dying_memcgs_v2(st) == 2
    assert dying_memcgs_v2({"nr_descendants": 3, "nr_dying_descendants": 9}) == 9
    rows = parse_proc_cgroups((FIXTURES / "hybrid-6.18-this-machine/proc/cgroups").read_text())
    assert [(r.name, r.hierarchy, r.enabled) for r in rows if r.name == "memory"] == [("memory", 4, True)]


@pytest.mark.parametrize(
    ("parser", "text"),
    [
        (parse_proc_cgroups, "memory 4 many 1\n"),
        (parse_thp_mode, "always madvise never"),
        (parse_overcommit, "max"),
        (parse_pressure, "some avg10=x"),
        (parse_pressure, ""),
        (parse_cgroup_stat, "nr_descendants\n"),
    ],
)
def test_garbled_text_is_a_parse_error(parser: object, text: str) -> None:
    with pytest.raises(ParseError):
        parser(text)  # type: ignore[operator]


def test_garbled_and_missing_files_become_unknown_and_counted(tmp_path: Path) -> None:
    root = tmp_path / "host"
    shutil.copytree(FIXTURES / "debian-6.1-v2-vm", root)
    (root / "proc/cgroups").write_text("#subsys_name\thierarchy\tnum_cgroups\tenabled\nmemory\t0\tlots\t1\n")
    (root / "proc/sys/vm/overcommit_memory").unlink()
    (root / "sys/kernel/mm/transparent_hugepage/enabled").write_text("max\n")
    facts = read_node_facts(root)
    assert facts.memory_cgroups.counted is None
    assert facts.memory_cgroups.dying == 13  # cgroup.stat still read
    assert facts.overcommit is None and facts.thp is None
    assert len(facts.errors) == 3
    assert any("overcommit_memory is missing" in e for e in facts.errors)
    assert any("/proc/cgroups line 2" in e for e in facts.errors)
    ids = {f.id for f in node_findings(facts)}
    assert "memcg-dying" in ids and "overcommit-always" not in ids


@pytest.mark.parametrize("sub", ["nonexistent", "empty"])
def test_wrong_host_root(tmp_path: Path, sub: str) -> None:
    root = tmp_path / sub
    if sub == "empty":
        root.mkdir()
    with pytest.raises(WrongHostRoot, match="--host-root"):
        read_node_facts(root)


def test_cgroups_without_proc_is_a_wrong_host_root(tmp_path: Path) -> None:
    root = tmp_path / "host"
    shutil.copytree(FIXTURES / "debian-6.1-v2-vm" / "sys", root / "sys")
    with pytest.raises(WrongHostRoot, match="no /proc under host root"):
        read_node_facts(root)


def test_this_machine_reads_without_errors() -> None:
    facts = read_node_facts(Path("/"))
    assert facts.errors == ()
    release = Path("/proc/sys/kernel/osrelease").read_text().strip()
    assert facts.kernel is not None and facts.kernel.release == release
    assert facts.memory_cgroups.live is not None and facts.memory_cgroups.live >= 1
    assert all(isinstance(f, Finding) for f in node_findings(facts))


GIB = 1 << 30
MIB = 1 << 20


@pytest.mark.parametrize(
    ("rows", "behaviour", "expected"),
    [
        # (memory.max, memory.swap.max, memory.swap.current) per container; None = max / no accounting
        ([(64 * MIB, 0, 0), (None, 0, 0)], "NoSwap", {"swap-on": "info"}),
        ([(64 * MIB, 8 * MIB, 3 * MIB), (64 * MIB, 0, 0)], "LimitedSwap", {"swap-on": "info"}),
        (
            [(64 * MIB, None, 5 * MIB), (64 * MIB, 0, 0)], "unlimited",
            {"swap-on": "info", "swap-unlimited": "warning"},
        ),
        ([(None, None, 0)], "unlimited", {"swap-on": "info"}),  # no swap setting anywhere, no memory limit
        # NoSwap with the pods' sandbox (pause) cgroups, which keep memory.max and swap.max at max
        ([(64 * MIB, 0, 0), (None, None, 0), (None, 0, 0), (None, None, 0)], "NoSwap", {"swap-on": "info"}),
        ([(64 * MIB, 8 * MIB, 0), (None, None, 0)], "LimitedSwap", {"swap-on": "info"}),
    ],
)
def test_pod_swap_on_v2(rows: list[tuple[int | None, int | None, int | None]], behaviour: str,
                        expected: dict[str, str]) -> None:
    ps = pod_swap(rows)
    assert ps is not None and ps.behaviour == behaviour
    facts = _facts(cgroup_version="v2", memory_version="v2", swap_total_bytes=GIB, swap_free_bytes=GIB,
                   pod_swap=ps)
    got = {k: v for k, v in _ids(facts).items() if k.startswith("swap")}
    assert got == expected
    findings = {f.id: f for f in node_findings(facts)}
    ev = dict(findings["swap-on"].evidence)
    assert ev["swap_behaviour"] == behaviour and ev["containers"] == str(len(rows))
    if ps.behaviour == "NoSwap" and ps.unlimited:
        assert "the others neither a memory limit nor a swap setting" in findings["swap-on"].message
    if "swap-unlimited" in findings:
        f = findings["swap-unlimited"]
        assert dict(f.evidence)["source"] == "https://kep.k8s.io/2400"
        assert "instead of being OOM-killed" in f.message and f.message.endswith(".")
        assert f"{prose_bytes(ps.used_bytes)} is swapped out now" in f.message


def test_pod_swap_counts_only_containers_with_swap_accounting() -> None:
    assert pod_swap([]) is None
    assert pod_swap([(64 * MIB, None, None)]) is None  # swapaccount=0: no memory.swap.* files
    ps = pod_swap([(64 * MIB, None, 0), (None, 16 * MIB, 1 * MIB), (None, 0, 0), (32 * MIB, 8 * MIB, 0)])
    assert ps is not None
    assert (ps.containers, ps.unlimited, ps.unlimited_with_limit, ps.zero, ps.limited) == (4, 1, 1, 1, 2)
    assert (ps.limited_bytes, ps.used_bytes) == (24 * MIB, 1 * MIB)


def test_v2_only_findings_never_fire_on_v1_and_v1_only_never_on_v2() -> None:
    """The same swap facts on a v1 host: NodeSwap does not exist there, the swap check stays v1's."""
    ps = pod_swap([(64 * MIB, None, 5 * MIB)])
    v1 = _facts(swap_total_bytes=GIB, swap_free_bytes=GIB, pod_swap=ps)
    assert {k: v for k, v in _ids(v1).items() if k.startswith("swap")} == {"swap-on": "warning"}
    assert not set(_ids(v1)) & V2_ONLY_FINDINGS
    for case, (_, version, *_rest) in CASES.items():
        ids = {f.id for f in node_findings(read_node_facts(FIXTURES / case))}
        if version == "v2":
            assert not ids & V1_ONLY_FINDINGS, case
        else:
            assert not ids & V2_ONLY_FINDINGS, case
    ids = {f.id for f in node_findings(read_node_facts(Path("/")))}  # this machine: memory on v1
    assert not ids & V2_ONLY_FINDINGS
