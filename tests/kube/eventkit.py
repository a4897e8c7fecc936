"""What the Event-delivery tests share: a kill's diagnosis to make Events from, and an Event's
``series`` count as the real API server holds it."""

from __future__ import annotations

from typing import Any

KILL_DIAG = {
    "scope": "container",
    "victim": {"pid": 4242, "comm": "memhog", "anon_rss_bytes": 40 << 20, "file_rss_bytes": 0,
               "shmem_rss_bytes": 0, "oom_score_adj": 0},
    "limit_bytes": 64 << 20,
    "charged": {"anon": 60 << 20, "file": 1 << 20, "shmem": 0, "kernel": 2 << 20},
    "dominant": "anon",
    "container_survived": True,
}  # fmt: skip


def series_count(rest: Any, namespace: str, name: str) -> int:
    """The Event's ``series.count`` on the API server (1 for a single occurrence)."""
    resp = rest.request("GET", f"/apis/events.k8s.io/v1/namespaces/{namespace}/events/{name}")
    assert resp.ok, resp.message
    return int((resp.body.get("series") or {}).get("count") or 1)
