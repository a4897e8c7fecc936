"""NodeMemoryReport status: bounded size, change detection, rate limit (pure)."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from oomsight.core.findings import Finding
from oomsight.core.report import (
    MAX_BYTES,
    PEAK_INTERVAL_SECONDS,
    ProfileBook,
    build_status,
    changed,
    due,
    select_containers,
    size_of,
)

ROOT = Path(__file__).resolve().parents[2]
NODE = {
    "kernel": "6.18.44",
    "cgroupVersion": "hybrid",
    "memoryController": "v1",
    "cgroupDriver": "cgroupfs",
    "kmemAccounting": "enabled",
    "memTotal": 24 << 30,
    "memoryCgroups": {"counted": 300, "live": 280},
    "swap": {"total": 0, "used": 0},
    "thp": "madvise",
}


def full_book(n=250, t0=1_700_000_000.0):
    book = ProfileBook()
    for i in range(n):
        uid = f"{i:08x}-1111-4222-8333-944445555666"
        for k in range(12):  # more intervals than are kept
            book.observe(
                t0 + 600 * k,
                f"namespace-with-a-longish-name-{i % 7}",
                f"deployment-name-{i}-7d9f8c6b5d-x2k4q",
                uid,
                f"container-{i % 3}",
                (100 + i + k) << 20,
                container_id="containerd://" + "ab" * 32,
                request=256 << 20,
                limit=512 << 20,
                limit_level="container",
                breakdown={
                    "anon": 90 << 20,
                    "active_file": 5 << 20,
                    "inactive_file": 3 << 20,
                    "shmem": 1 << 20,
                    "kernel": 2 << 20,
                    "swap": 0,
                    "dirty": 0,
                    "writeback": 0,
                },
            )
        book.oom(uid, f"container-{i % 3}")
    return book


def incident(i):
    return {
        "time": "2026-11-23T13:00:00Z",
        "namespace": "ns",
        "pod": f"p{i}",
        "podUID": "u" * 36,
        "container": "c",
        "scope": "container",
        "victim": {"pid": i, "comm": "java", "rss": 1 << 30, "containerSurvived": False},
        "limit": 1 << 30,
        "explanation": "x" * 1024,
        "bootID": "b" * 36,
        "seq": i,
    }


def findings(n=32):
    return [
        Finding(
            f"finding-{i}", "warning", "m" * 1024, tuple((f"k{j}", "v" * 256) for j in range(16)), "f" * 1024
        )
        for i in range(n)
    ]


def test_250_containers_with_everything_fit_under_256_kib():
    status = build_status(
        report_time="2026-11-23T13:00:00Z",
        agent_version="0.1.0",
        boot_id="b" * 36,
        node=NODE,
        findings=[],
        profiles=full_book().profiles.values(),
        incidents=[incident(i) for i in range(32)],
        oom_kills_24h=250,
    )
    assert len(status["containers"]) == 250
    assert all(len(c["peaks"]) == 8 for c in status["containers"])
    assert size_of(status) < MAX_BYTES
    print("report bytes with 250 containers:", size_of(status))


def test_worst_case_is_trimmed_below_the_budget():
    status = build_status(
        report_time="t",
        agent_version="v",
        boot_id="b",
        node=NODE,
        findings=findings(40),
        profiles=full_book(400).profiles.values(),
        incidents=[incident(i) for i in range(50)],
        oom_kills_24h=0,
    )
    assert size_of(status) < MAX_BYTES
    assert len(status["findings"]) == 16 and len(status["containers"]) <= 250
    assert status["containersObserved"] == 400
    assert status["risk"] == "warning"


def test_status_matches_the_crd_schema_field_names():
    crd = yaml.safe_load((ROOT / "crds" / "nodememoryreports.oomsight.io.yaml").read_text())
    props = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]
    status = build_status(
        report_time="t",
        agent_version="v",
        boot_id="b",
        node=NODE,
        findings=findings(1),
        profiles=full_book(3).profiles.values(),
        incidents=[incident(1)],
        oom_kills_24h=1,
    )
    assert set(status) <= set(props)
    assert set(status["node"]) <= set(props["node"]["properties"])
    cprops = props["containers"]["items"]["properties"]
    for c in status["containers"]:
        assert set(c) <= set(cprops)
        assert set(c["breakdown"]) <= set(cprops["breakdown"]["properties"])
        assert c["limitLevel"] in cprops["limitLevel"]["enum"]
    assert set(status["incidents"][0]) <= set(props["incidents"]["items"]["properties"])


def test_bounds_agree_with_the_crd():
    from oomsight.core import report
    from oomsight.kube import crd as names

    doc = yaml.safe_load((ROOT / "crds" / "nodememoryreports.oomsight.io.yaml").read_text())
    props = doc["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]
    cprops = props["containers"]["items"]["properties"]
    assert report.MAX_CONTAINERS == names.MAX_REPORT_CONTAINERS == props["containers"]["maxItems"]
    assert report.MAX_PEAKS == names.MAX_REPORT_PEAKS == cprops["peaks"]["maxItems"]
    assert report.MAX_FINDINGS == names.MAX_REPORT_FINDINGS == props["findings"]["maxItems"]
    assert report.MAX_INCIDENTS == names.MAX_REPORT_INCIDENTS == props["incidents"]["maxItems"]
    assert report.MAX_BYTES == names.MAX_REPORT_BYTES


def test_selection_keeps_oom_killed_and_closest_to_limit():
    book = ProfileBook()
    book.observe(0, "ns", "calm", "u1", "c", 10, limit=100)
    book.observe(0, "ns", "hot", "u2", "c", 95, limit=100)
    book.observe(0, "ns", "killed", "u3", "c", 1, limit=100)
    book.oom("u3", "c")
    assert [p.pod for p in select_containers(book.profiles.values(), 2)] == ["killed", "hot"]


def test_peaks_are_one_per_interval_and_keep_the_max():
    book = ProfileBook(interval=300)
    for t, ws in [(0, 5), (100, 9), (200, 7), (300, 1), (650, 4)]:
        book.observe(t, "ns", "p", "u", "c", ws)
    assert book.profiles[("u", "c")].peaks == [(0, 9), (300, 1), (600, 4)]
    for t in range(900, 900 + 300 * 20, 300):
        book.observe(t, "ns", "p", "u", "c", 1)
    assert len(book.profiles[("u", "c")].peaks) == 8


def test_changed_ignores_noise_and_time_but_not_real_change():
    def status(ws, kills=0, t="t1", breakdown=None, now=0):
        book = ProfileBook()
        book.observe(now, "ns", "p", "u", "c", ws, limit=1 << 30, breakdown=breakdown)
        for _ in range(kills):
            book.oom("u", "c")
        return build_status(
            report_time=t,
            agent_version="v",
            boot_id="b",
            node=NODE,
            findings=[],
            profiles=book.profiles.values(),
            incidents=[],
            oom_kills_24h=kills,
        )

    base = status(500 << 20)
    assert changed(None, base)
    assert not changed(base, status((500 << 20) + 4096, t="t2"))
    assert changed(base, status(700 << 20))
    assert changed(base, status(500 << 20, kills=1))
    assert changed(base, status(500 << 20, now=PEAK_INTERVAL_SECONDS))  # a new peak interval


def test_changed_ignores_pages_moving_between_lru_lists_of_an_idle_container():
    # Numbers idle 8 MiB memhog containers showed here (6.18, v1): a few pages of file cache and
    # ~110 KiB of kernel memory. A reclaim that moves those pages between the LRU lists changed the
    # old fingerprint (5 % log steps on each field, even a 4 KiB one): a second write (issue 15 #6).
    def status(active_file, inactive_file, kernel, ws):
        book = ProfileBook()
        bd = {
            "anon": 13692928,
            "active_file": active_file,
            "inactive_file": inactive_file,
            "shmem": 0,
            "kernel": kernel,
            "swap": None,
        }
        book.observe(0, "ns", "p", "u", "c", ws, limit=64 << 20, breakdown=bd)
        return build_status(
            report_time="t",
            agent_version="v",
            boot_id="b",
            node=NODE,
            findings=[],
            profiles=book.profiles.values(),
            incidents=[],
            oom_kills_24h=0,
        )

    before = status(16384, 0, 114688, 13885440)
    assert not changed(before, status(0, 16384, 118784, 13869056))
    assert not changed(before, status(36864, 4096, 110592, 13901824))
    assert changed(before, status(16384, 0, 114688, 13885440 + (3 << 20)))


def test_changed_against_the_last_write_does_not_flap_on_a_boundary():
    # A value wobbling by 0.5 MiB around 10 MiB crosses 5 % rounding steps back and forth; compared
    # with the value last written it never moves enough to be a change.
    def status(ws):
        book = ProfileBook()
        book.observe(0, "ns", "p", "u", "c", ws, limit=1 << 30)
        return build_status(
            report_time="t",
            agent_version="v",
            boot_id="b",
            node=NODE,
            findings=[],
            profiles=book.profiles.values(),
            incidents=[],
            oom_kills_24h=0,
        )

    written = status(10 << 20)
    writes = 0
    for i in range(1, 9):
        s = status((10 << 20) + (1 << 19) * (1 if i % 2 else -1))
        if changed(written, s):
            written, writes = s, writes + 1
    assert writes == 0
    grown = status(12 << 20)
    assert changed(written, grown)


def test_due_only_on_change_and_at_most_once_a_minute():
    assert due(None, 0, True)
    assert not due(None, 0, False)
    assert not due(100.0, 159.0, True)
    assert due(100.0, 160.0, True)


def test_report_json_is_plain():
    status = build_status(
        report_time="t",
        agent_version="v",
        boot_id="b",
        node=NODE,
        findings=[],
        profiles=full_book(2).profiles.values(),
        incidents=[],
        oom_kills_24h=0,
    )
    assert json.loads(json.dumps(status)) == status
