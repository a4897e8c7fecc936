"""The agent itself in a hack/vm guest on cgroup v2, with swap on and no API server; results as JSON.

    hack/vm run --kernel 6.1 --mem 512M --share OUT -- python3 tests/vm/guest_agent.py OUT

What it sets up, all real in the guest: a swap file on the root disk (ext4 on virtio-blk; ``mkswap``
+ ``swapon``), and three kubelet-style pods on cgroup v2, one container each, with the swap settings
a kubelet writes (``memory.swap.max``, KEP-2400), each next to its pod's sandbox cgroup as
containerd leaves it (no memory limit, no swap setting):

- ``swapper``: ``memory.max`` 32 MiB, ``memory.swap.max`` ``max`` (a container started with no swap
  setting): 48 MiB of anon, more than its limit; the kernel swaps the rest out and kills nothing.
- ``limited``: 32 MiB and ``memory.swap.max`` 16 MiB (LimitedSwap's share): 30 MiB of anon and the
  interpreter's own fit, part of it swapped.
- ``noswap``: 32 MiB and ``memory.swap.max`` 0 (NoSwap), ``memory.oom.group`` 1: it grows until the
  kernel kills it.

Then the agent (``oomsight.agent.loop.Agent``, its real loop) runs in this process with a
kubeconfig pointing at a port nothing listens on: its pod watch fails (counted), and its pod cache
holds the three Pods as the watch would have delivered them (``PodCache._apply``, the watch's own
entry point). The kill happens while it runs. Recorded: its ``/metrics`` text (the collector it
serves), its spool (the Events it would post), ``oomsight node --json`` and the cgroups' own files,
and a node fixture (tests/fixtures/node) of this host with the containers' swap files.
Nothing here judges: ``tests/vm/test_vm_agent.py`` asserts on ``OUT/results.json``.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import shutil
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any

TESTS = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(TESTS))

from cgroupkit import MIB, Cgroup, CgroupKit  # noqa: E402
from oomsight.core.podinfo import ANNOTATION_WARNING_THRESHOLD  # noqa: E402

WAIT = 180.0
SWAP_FILE = Path("/var/tmp/oomsight-swap")
SWAP_MIB = 96
NODE = "oomsight-vm"


def events(cg: Cgroup) -> dict[str, int]:
    return {k: int(v) for k, v in (ln.split() for ln in cg.read("memory.events").splitlines())}


def read_or_none(cg: Cgroup, name: str) -> str | None:
    try:
        return cg.read(name).strip()
    except FileNotFoundError:
        return None


def wait_for(what: str, check: Any, timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(0.2)


def swap_on() -> dict[str, Any]:
    """A swap file on the root disk: ext4 on virtio-blk takes a swap file (9p and tmpfs do not)."""
    with SWAP_FILE.open("wb") as f:
        for _ in range(SWAP_MIB):
            f.write(b"\0" * MIB)
    SWAP_FILE.chmod(0o600)
    mk = subprocess.run(["mkswap", str(SWAP_FILE)], capture_output=True, text=True, check=False)
    on = subprocess.run(["swapon", str(SWAP_FILE)], capture_output=True, text=True, check=False)
    return {
        "mkswap_rc": mk.returncode,
        "swapon_rc": on.returncode,
        "swapon_stderr": on.stderr.strip(),
        "proc_swaps": Path("/proc/swaps").read_text(),
    }


def pod_json(
    uid: str, name: str, cid: str, request: str, limit: str, annotations: dict[str, str] | None = None
) -> dict[str, Any]:
    """A Pod as the API server returns it for this node (what the agent's watch would deliver)."""
    return {
        "metadata": {"uid": uid, "namespace": "vm", "name": name, "annotations": annotations or {}},
        "spec": {
            "nodeName": NODE,
            "containers": [
                {"name": "app", "resources": {"requests": {"memory": request}, "limits": {"memory": limit}}}
            ],
        },
        "status": {
            "phase": "Running",
            "containerStatuses": [{"name": "app", "containerID": f"containerd://{cid}", "ready": True}],
        },
    }


def capture_node_fixture(out: Path, root: Path) -> None:
    """This host as a tests/fixtures/node host root: the node files (as tests/vm/guest_scenarios.py
    captures them) plus, for every leaf cgroup under ``root`` (the containers and the sandboxes), the
    files the swap check reads (and memory.peak, memory.pressure, memory.events)."""
    from oomsight.host.nodeinfo import POD_SWAP_FILES
    from vm.guest_scenarios import capture_node

    capture_node(out)
    mount = Path("/sys/fs/cgroup")
    for d, dirs, _ in os.walk(root):
        if dirs:
            continue
        target = out / "sys/fs/cgroup" / Path(d).relative_to(mount)
        for name in (*POD_SWAP_FILES, "memory.peak", "memory.pressure", "memory.events"):
            src = Path(d) / name
            if src.exists():
                (target / name).write_text(src.read_text())


class Scenario:
    def __init__(self, out: Path) -> None:
        self.out = out
        self.kit = CgroupKit(Path("/sys/fs/cgroup"), "v2")
        self.procs: list[subprocess.Popen[str]] = []
        self.results: dict[str, Any] = {
            "kernel": platform.release(),
            "cmdline": Path("/proc/cmdline").read_text().strip(),
            "proc_pressure_memory": (
                Path("/proc/pressure/memory").read_text() if Path("/proc/pressure/memory").exists() else None
            ),
            "pods": {},
        }
        self.cgroups: dict[str, Cgroup] = {}
        self.pods: list[dict[str, Any]] = []

    def container(self, name: str, swap_max: str, request: str, oom_group: bool) -> Cgroup:
        driver = "systemd" if name == "swapper" else "cgroupfs"
        pod, uid = self.kit.pod(qos="burstable", driver=driver)
        c, cid = self.kit.container(pod, limit=32 * MIB, oom_group=oom_group)
        (c.path / "memory.swap.max").write_text(swap_max)
        # The pod's sandbox (pause) cgroup next to it, as containerd leaves it: no memory limit, no
        # swap setting (memory.max and memory.swap.max stay 'max'), and no container of the Pod.
        self.kit.container(pod)
        self.cgroups[name] = c
        # The swapper's working set is where reclaim at memory.max stopped, below the limit by as
        # much as the kernel overshot: 27.4 MiB (86%) on 6.12 in one CI run (2026-12-05 02:01 UTC),
        # under the default 90%. Its warning is asked at 75%, as a MemoryPolicy would annotate it.
        annotations = {ANNOTATION_WARNING_THRESHOLD: "75"} if name == "swapper" else None
        self.pods.append(pod_json(uid, name, cid, request, "32Mi", annotations))
        self.results["pods"][name] = {"uid": uid, "container_id": cid, "cgroup": c.rel}
        return c

    def before_agent(self) -> None:
        """Swap on, the three containers, the two that fit started (so the agent's first node check
        sees them)."""
        self.results["swap"] = swap_on()
        swapper = self.container("swapper", "max", "16Mi", oom_group=True)
        limited = self.container("limited", str(16 * MIB), "16Mi", oom_group=True)
        self.container("noswap", "0", "16Mi", oom_group=True)
        self.procs.append(swapper.spawn("--anon", "48", timeout=WAIT))
        self.procs.append(limited.spawn("--anon", "30", timeout=WAIT))  # + the interpreter: ~40 MiB

    def during_agent(self, agent: Any) -> None:
        """The kill, while the agent runs; then a few sweeps, the scrape, and stop."""
        try:
            wait_for("agent: first sweep", lambda: agent.counters.get("oomsight_agent_sweeps_total") >= 1)
            noswap = self.cgroups["noswap"]
            p = noswap.spawn("--grow-anon-mib", "4", ready=False, timeout=WAIT)
            self.results["noswap_rc"] = p.wait(WAIT)
            wait_for("agent: the kill spooled", lambda: any(
                e.reason.startswith("OOMKilled") for e in agent.state.pending()))  # fmt: skip
            def sweeps() -> float:
                return float(agent.counters.get("oomsight_agent_sweeps_total"))

            n = sweeps()
            wait_for("agent: two more sweeps", lambda: sweeps() >= n + 2)
            self.results["metrics"] = scrape(agent)
        except Exception as err:
            self.results["error"] = f"{type(err).__name__}: {err}"
            traceback.print_exc()
        finally:
            agent.stop.set()

    def after_agent(self) -> None:
        swapper, limited = self.procs
        self.results["alive"] = {"swapper": swapper.poll() is None, "limited": limited.poll() is None}
        for name, c in self.cgroups.items():
            self.results["pods"][name].update(
                events=events(c),
                swap_max=read_or_none(c, "memory.swap.max"),
                swap_current=int(read_or_none(c, "memory.swap.current") or 0),
                current=int(read_or_none(c, "memory.current") or 0),
                peak=read_or_none(c, "memory.peak"),
                pressure=read_or_none(c, "memory.pressure"),
            )
        node = subprocess.run(["oomsight", "node", "--json"], capture_output=True, text=True, check=False)
        doc = json.loads(node.stdout) if node.stdout else None
        self.results["node"] = {"rc": node.returncode, "json": doc, "stderr": node.stderr[-2000:]}
        capture_node_fixture(self.out / "node-fixture", self.kit.root)


def scrape(agent: Any) -> str:
    from prometheus_client.exposition import generate_latest

    from oomsight.agent.metrics import AgentCollector, make_registry

    collector = AgentCollector(lambda: agent.snapshot, agent.counters, agent.state.count, NODE,
                               source=lambda: agent.source)  # fmt: skip
    return generate_latest(make_registry(collector)).decode()


def main() -> int:
    out = Path(sys.argv[1])
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s",
                        filename=str(out / "agent.log"))  # fmt: skip
    from oomsight.agent.loop import Agent
    from oomsight.agent.settings import Settings

    kubeconfig = out / "kubeconfig"
    kubeconfig.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "vm",
        "clusters": [{"name": "vm", "cluster": {"server": "http://127.0.0.1:9"}}],
        "users": [{"name": "vm", "user": {"token": "none"}}],
        "contexts": [{"name": "vm", "context": {"cluster": "vm", "user": "vm"}}],
    }))  # fmt: skip
    sc = Scenario(out)
    t0 = time.monotonic()
    try:
        sc.before_agent()
        state = out / "agent-state"
        settings = Settings(node_name=NODE, kubeconfig=str(kubeconfig), host_root=Path("/"), state_dir=state,
                            interval=2.0, metrics_port=0, report_interval=3600.0)  # fmt: skip
        agent = Agent(settings)
        for pod in sc.pods:
            agent.pods._apply(pod)  # what the watch does with an ADDED event
        agent.pods.synced.set()
        helper = threading.Thread(target=sc.during_agent, args=(agent,), daemon=True)
        helper.start()
        agent.run()  # the main thread: it installs its signal handlers; returns once stopped
        helper.join(WAIT)
        sc.results["spooled"] = [spec.to_json() for spec in agent.state.pending()]
        sc.results["counters"] = {
            f"{name}{dict(labels)}": value for (name, labels), value in agent.counters.values.items()
        }
        sc.after_agent()
    except Exception as err:
        sc.results["error"] = f"{type(err).__name__}: {err}"
        traceback.print_exc()
    finally:
        sc.results["seconds"] = round(time.monotonic() - t0, 1)
        (out / "results.json").write_text(json.dumps(sc.results, indent=1, default=str) + "\n")
        sc.kit.cleanup(sc.procs)
        subprocess.run(["swapoff", str(SWAP_FILE)], check=False)
        shutil.rmtree(out / "agent-state" / "tmp", ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
