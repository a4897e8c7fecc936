"""A container's memory, from the text of its cgroup files (v1 and v2). Pure: text in, dataclasses out.

The adapter (``oomsight.host.cgroupfs``) reads a cgroup's files into a ``{file name: text}`` map and
calls ``reading_v1`` or ``reading_v2``; every number here is bytes unless its name says otherwise.

Sources for the formats:

- cgroup v1: Documentation/admin-guide/cgroup-v1/memory.rst ("5.2 stat file"); ``memory.stat`` prints
  local counters, ``hierarchical_memory_limit``/``hierarchical_memsw_limit`` and ``total_*`` (subtree)
  counters (mm/memcontrol.c ``memcg_stat_show``/``memcg1_stat_format``). ``memory.oom_control`` has
  ``oom_kill_disable``, ``under_oom`` and, since 4.13 ("mm/oom_kill: count global and memory cgroup
  oom kills"), ``oom_kill``.
  "No limit" reads as ``PAGE_COUNTER_MAX * PAGE_SIZE``: 9223372036854771712 with 4 KiB pages.
- cgroup v2: Documentation/admin-guide/cgroup-v2.rst ("Memory Interface Files"): ``memory.current``,
  ``memory.max``/``high``/``low``/``min`` (a number or ``max``), ``memory.peak`` (5.19+),
  ``memory.events`` (``low high max oom oom_kill``, ``oom_group_kill`` 5.17+), ``memory.stat``
  (``kernel`` 5.18+, ``slab`` 5.9+), ``memory.swap.current``/``swap.max``, ``memory.pressure`` (PSI,
  4.20+), ``memory.oom.group``, ``cgroup.stat``.
- Working set: cAdvisor ``setMemoryStats`` (container/libcontainer/handler.go): usage minus
  ``total_inactive_file`` (v1) or ``inactive_file`` (v2), clamped at 0; the kubelet's eviction
  signal and metrics-server use the same number.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, TypeVar

from oomsight.core.errors import ParseError
from oomsight.core.kubepath import parse_cgroup_path

CgroupVersion = Literal["v1", "v2"]
LimitLevel = Literal["container", "pod", "qos", "kubepods", "other"]
_T = TypeVar("_T")

V1_UNLIMITED_MIN = 1 << 62
"""v1 prints "no limit" as PAGE_COUNTER_MAX rounded to pages (9223372036854771712 with 4 KiB pages,
9223372036854710272 with 64 KiB): any value at or above 2**62 is treated as unlimited."""

# The files each version's reader needs. ``host.cgroupfs`` reads exactly these, nothing else.
V1_FILES: tuple[str, ...] = (
    "memory.usage_in_bytes",
    "memory.limit_in_bytes",
    "memory.max_usage_in_bytes",
    "memory.failcnt",
    "memory.stat",
    "memory.oom_control",
    "memory.kmem.usage_in_bytes",
    "memory.memsw.usage_in_bytes",
    "memory.memsw.limit_in_bytes",
    "memory.use_hierarchy",
)
V2_FILES: tuple[str, ...] = (
    "memory.current",
    "memory.max",
    "memory.high",
    "memory.low",
    "memory.min",
    "memory.peak",
    "memory.events",
    "memory.events.local",
    "memory.stat",
    "memory.swap.current",
    "memory.swap.max",
    "memory.pressure",
    "memory.oom.group",
    "cgroup.stat",
)
V1_SWEEP_FILES: tuple[str, ...] = (
    "memory.usage_in_bytes",
    "memory.limit_in_bytes",
    "memory.stat",
    "memory.oom_control",
    "memory.kmem.usage_in_bytes",
)
"""What a sweep reads per v1 cgroup by default: usage, limit, breakdown and OOM state. Left out:
``memory.memsw.*`` (swap is ``total_swap`` in memory.stat), ``max_usage_in_bytes`` and ``failcnt``
(``CgroupWalker.read`` has them), and ``memory.use_hierarchy``, read once at the root: while the
root has it set, the kernel refuses to clear it below (mm/memcontrol.c ``mem_cgroup_hierarchy_write``)."""
V1_REQUIRED = ("memory.usage_in_bytes", "memory.limit_in_bytes", "memory.stat")
V2_REQUIRED = ("memory.current", "memory.stat")


# --------------------------------------------------------------------------------------------- parsers


def _bad(name: str, text: str, expected: str) -> ParseError:
    shown = text.strip()[:40] or "<empty>"
    return ParseError(
        f"{name}: expected {expected}, got {shown!r}",
        "the file is truncated or not a kernel cgroup file; check the host root and the kernel version",
    )


def parse_int(name: str, text: str) -> int:
    """A file holding one non-negative integer (``memory.usage_in_bytes``, ``memory.current``)."""
    s = text.strip()
    if not s.isdigit():
        raise _bad(name, text, "one integer")
    return int(s)


def parse_v1_limit(name: str, text: str) -> int | None:
    """A v1 ``*limit_in_bytes``: bytes, or None when it is the "unlimited" value."""
    value = parse_int(name, text)
    return None if value >= V1_UNLIMITED_MIN else value


def parse_v2_limit(name: str, text: str) -> int | None:
    """A v2 limit or protection (``memory.max``/``high``/``low``/``min``/``swap.max``): bytes or ``max``."""
    s = text.strip()
    if s == "max":
        return None
    return parse_int(name, s)


def parse_flat_keyed(name: str, text: str) -> dict[str, int]:
    """``key value`` lines (``memory.stat``, ``memory.events``, ``memory.oom_control``, ``cgroup.stat``).

    Unknown keys are kept (kernels add keys); a line that is not ``key integer`` raises ``ParseError``.
    The kernel ends every line with a newline (seq_file), so a file whose last line lacks one was cut
    short, even when the cut fell between two digits. An empty file is an error too.
    """
    if text and not text.endswith("\n"):
        last = text.rsplit("\n", 1)[-1]
        raise ParseError(
            f"{name}: truncated, the last line {last[:40]!r} has no newline",
            "the file was cut short; read it again, and check the host root if it persists",
        )
    parts = text.split()
    # Fast path (a sweep parses hundreds of these): one ``key value`` pair per line, all integers.
    # Keys are interned: every cgroup's reading holds the same few dozen names once, not its own
    # copies (memory.stat: ~2.6 of a reading's ~3.6 KiB; the agent keeps one reading per container).
    if parts and len(parts) == 2 * text.count("\n"):
        values = parts[1::2]
        if "".join(values).isdigit():  # plain digits only: int() would also take "-1" or "1_000"
            return dict(zip(map(sys.intern, parts[0::2]), map(int, values), strict=True))
    out = {}
    for line in text.splitlines():
        if not line:
            continue
        key, sep, value = line.partition(" ")
        if not sep or not key or not value.isdigit():
            raise _bad(name, line, "'key integer' lines")
        out[sys.intern(key)] = int(value)
    if not out:
        raise _bad(name, text, "'key integer' lines")
    return out


@dataclass(frozen=True, slots=True)
class PressureLine:
    """One PSI line: share of wall time stalled (percent) over 10/60/300 s, and the total in µs."""

    avg10: float
    avg60: float
    avg300: float
    total_us: int


@dataclass(frozen=True, slots=True)
class Pressure:
    """``memory.pressure`` / ``/proc/pressure/memory`` (Documentation/accounting/psi.rst, 4.20+)."""

    some: PressureLine
    full: PressureLine | None


def parse_pressure(name: str, text: str) -> Pressure:
    """``some avg10=0.00 avg60=0.00 avg300=0.00 total=0`` and an optional ``full ...`` line."""
    lines: dict[str, PressureLine] = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        kind, _, rest = line.partition(" ")
        fields: dict[str, str] = {}
        for item in rest.split():
            k, eq, v = item.partition("=")
            if not eq:
                raise _bad(name, line, "'some|full avg10=.. avg60=.. avg300=.. total=..'")
            fields[k] = v
        try:
            lines[kind] = PressureLine(
                avg10=float(fields["avg10"]),
                avg60=float(fields["avg60"]),
                avg300=float(fields["avg300"]),
                total_us=int(fields["total"]),
            )
        except (KeyError, ValueError):
            raise _bad(name, line, "'some|full avg10=.. avg60=.. avg300=.. total=..'") from None
    if "some" not in lines:
        raise _bad(name, text, "a 'some avg10=..' line")
    return Pressure(some=lines["some"], full=lines.get("full"))


# --------------------------------------------------------------------------------------------- readings


def oom_kill_count(name: str, text: str) -> int | None:
    """The ``oom_kill`` counter alone, from v1 ``memory.oom_control`` or v2 ``memory.events`` text;
    None when the kernel has none (v1 before 4.13). Raises ``ParseError`` on a malformed file."""
    return parse_flat_keyed(name, text).get("oom_kill")


@dataclass(frozen=True, slots=True)
class OomControl:
    """v1 ``memory.oom_control``. ``oom_kill`` is None before 4.13 (the counter did not exist)."""

    oom_kill_disable: bool
    under_oom: bool
    oom_kill: int | None


@dataclass(frozen=True, slots=True)
class MemoryEvents:
    """v2 ``memory.events`` (hierarchical) or ``memory.events.local``. None = key absent on that kernel."""

    low: int
    high: int
    max: int
    oom: int
    oom_kill: int
    oom_group_kill: int | None


@dataclass(frozen=True, slots=True)
class MemoryReading:
    """One cgroup's memory files, parsed. Bytes throughout; a limit of None means "no limit"."""

    version: CgroupVersion
    usage_bytes: int
    """v1 ``memory.usage_in_bytes`` (includes kmem; approximate by per-CPU batches), v2 ``memory.current``."""
    limit_bytes: int | None
    """This cgroup's own limit: v1 ``memory.limit_in_bytes``, v2 ``memory.max``."""
    stat: Mapping[str, int]
    """``memory.stat`` as printed, every key kept."""
    use_hierarchy: bool = True
    """v1 ``memory.use_hierarchy`` (always 1 on v2 and on v1 since 5.x)."""
    peak_bytes: int | None = None
    """v1 ``memory.max_usage_in_bytes``, v2 ``memory.peak`` (5.19+)."""
    failcnt: int | None = None
    """v1 ``memory.failcnt``: how often usage hit the limit."""
    kmem_usage_bytes: int | None = None
    """v1 ``memory.kmem.usage_in_bytes``."""
    memsw_usage_bytes: int | None = None
    """v1 ``memory.memsw.usage_in_bytes`` (memory + swap); absent without swap accounting."""
    memsw_limit_bytes: int | None = None
    swap_usage_bytes: int | None = None
    """v2 ``memory.swap.current``."""
    swap_limit_bytes: int | None = None
    """v2 ``memory.swap.max`` (None = max)."""
    high_bytes: int | None = None
    low_bytes: int | None = None
    min_bytes: int | None = None
    oom_control: OomControl | None = None
    events: MemoryEvents | None = None
    events_local: MemoryEvents | None = None
    pressure: Pressure | None = None
    oom_group: bool | None = None
    cgroup_stat: Mapping[str, int] | None = None
    """v2 ``cgroup.stat`` (``nr_descendants``, ``nr_dying_descendants``, ...)."""

    @property
    def inactive_file_bytes(self) -> int | None:
        """The inactive file LRU that cAdvisor subtracts: ``total_inactive_file`` when hierarchical (v1)."""
        if self.version == "v1" and self.use_hierarchy and "total_inactive_file" in self.stat:
            return self.stat["total_inactive_file"]
        return self.stat.get("inactive_file")

    @property
    def working_set_bytes(self) -> int:
        """cAdvisor's working set: usage − inactive file, clamped at 0 (usage when the key is absent)."""
        inactive = self.inactive_file_bytes
        if inactive is None:
            return self.usage_bytes
        return max(0, self.usage_bytes - inactive)

    @property
    def oom_kills(self) -> int | None:
        """OOM kills in this cgroup and below: v1 ``oom_control.oom_kill`` (4.13+), v2 ``events.oom_kill``."""
        if self.oom_control is not None:
            return self.oom_control.oom_kill
        if self.events is not None:
            return self.events.oom_kill
        return None


def _events(name: str, text: str) -> MemoryEvents:
    kv = parse_flat_keyed(name, text)
    try:
        return MemoryEvents(
            low=kv["low"],
            high=kv["high"],
            max=kv["max"],
            oom=kv["oom"],
            oom_kill=kv["oom_kill"],
            oom_group_kill=kv.get("oom_group_kill"),
        )
    except KeyError as err:
        raise _bad(name, text, f"the key {err.args[0]!r}") from None


def _require(files: Mapping[str, str], names: Sequence[str]) -> None:
    for name in names:
        if name not in files:
            raise ParseError(
                f"{name} is missing",
                "the memory controller is not enabled for this cgroup, or the host root is wrong",
            )


def reading_v1(files: Mapping[str, str]) -> MemoryReading:
    """Parse a v1 memory cgroup's files (names as in ``V1_FILES``; only ``V1_REQUIRED`` must be there)."""
    _require(files, V1_REQUIRED)
    oom_control = None
    if (t := files.get("memory.oom_control")) is not None:
        kv = parse_flat_keyed("memory.oom_control", t)
        if "oom_kill_disable" not in kv or "under_oom" not in kv:
            raise _bad("memory.oom_control", t, "oom_kill_disable and under_oom")
        oom_control = OomControl(
            oom_kill_disable=bool(kv["oom_kill_disable"]),
            under_oom=bool(kv["under_oom"]),
            oom_kill=kv.get("oom_kill"),
        )
    t = files.get("memory.use_hierarchy")
    return MemoryReading(
        version="v1",
        usage_bytes=parse_int("memory.usage_in_bytes", files["memory.usage_in_bytes"]),
        limit_bytes=parse_v1_limit("memory.limit_in_bytes", files["memory.limit_in_bytes"]),
        stat=parse_flat_keyed("memory.stat", files["memory.stat"]),
        use_hierarchy=True if t is None else parse_int("memory.use_hierarchy", t) == 1,
        peak_bytes=_maybe(files, "memory.max_usage_in_bytes", parse_int),
        failcnt=_maybe(files, "memory.failcnt", parse_int),
        kmem_usage_bytes=_maybe(files, "memory.kmem.usage_in_bytes", parse_int),
        memsw_usage_bytes=_maybe(files, "memory.memsw.usage_in_bytes", parse_int),
        memsw_limit_bytes=_maybe(files, "memory.memsw.limit_in_bytes", parse_v1_limit),
        oom_control=oom_control,
    )


def _maybe(files: Mapping[str, str], name: str, parse: Callable[[str, str], _T]) -> _T | None:
    text = files.get(name)
    return None if text is None else parse(name, text)


def reading_v2(files: Mapping[str, str]) -> MemoryReading:
    """Parse a v2 cgroup's memory files (names as in ``V2_FILES``; only ``V2_REQUIRED`` must be there).

    The root cgroup has no ``memory.max``; its limit reads as None.
    """
    _require(files, V2_REQUIRED)
    group = _maybe(files, "memory.oom.group", parse_int)
    return MemoryReading(
        version="v2",
        usage_bytes=parse_int("memory.current", files["memory.current"]),
        limit_bytes=_maybe(files, "memory.max", parse_v2_limit),
        stat=parse_flat_keyed("memory.stat", files["memory.stat"]),
        peak_bytes=_maybe(files, "memory.peak", parse_int),
        swap_usage_bytes=_maybe(files, "memory.swap.current", parse_int),
        swap_limit_bytes=_maybe(files, "memory.swap.max", parse_v2_limit),
        high_bytes=_maybe(files, "memory.high", parse_v2_limit),
        low_bytes=_maybe(files, "memory.low", parse_v2_limit),
        min_bytes=_maybe(files, "memory.min", parse_v2_limit),
        events=_maybe(files, "memory.events", _events),
        events_local=_maybe(files, "memory.events.local", _events),
        pressure=_maybe(files, "memory.pressure", parse_pressure),
        oom_group=None if group is None else group == 1,
        cgroup_stat=_maybe(files, "cgroup.stat", parse_flat_keyed),
    )


# --------------------------------------------------------------------------------------------- breakdown

_V2_KERNEL_PARTS = ("kernel_stack", "pagetables", "percpu", "sock", "vmalloc")


@dataclass(frozen=True, slots=True)
class Breakdown:
    """What the memory is, in bytes by kind. None = this kernel does not report that kind.

    ``anon`` excludes shmem on both versions (v1 ``rss``, v2 ``anon``); ``shmem`` (tmpfs, /dev/shm,
    shared anonymous mappings) is page cache that sits on the anon LRU: it is never in inactive_file,
    so it always counts in the working set and cannot be reclaimed without swap.
    """

    anon: int | None
    active_file: int | None
    inactive_file: int | None
    shmem: int | None
    kernel: int | None
    swap: int | None
    dirty: int | None
    writeback: int | None

    def as_dict(self) -> dict[str, int | None]:
        return {
            "anon": self.anon,
            "active_file": self.active_file,
            "inactive_file": self.inactive_file,
            "shmem": self.shmem,
            "kernel": self.kernel,
            "swap": self.swap,
            "dirty": self.dirty,
            "writeback": self.writeback,
        }


def breakdown(reading: MemoryReading) -> Breakdown:
    """Split a reading by kind: v1 from ``total_*`` (hierarchical) or local keys, v2 from ``memory.stat``."""
    s = reading.stat
    if reading.version == "v1":
        pre = "total_" if reading.use_hierarchy and "total_rss" in s else ""
        swap = s.get(pre + "swap")
        if swap is None and reading.memsw_usage_bytes is not None:
            swap = max(0, reading.memsw_usage_bytes - reading.usage_bytes)
        return Breakdown(
            anon=s.get(pre + "rss"),
            active_file=s.get(pre + "active_file"),
            inactive_file=s.get(pre + "inactive_file"),
            shmem=s.get(pre + "shmem"),
            kernel=reading.kmem_usage_bytes,
            swap=swap,
            dirty=s.get(pre + "dirty"),
            writeback=s.get(pre + "writeback"),
        )
    kernel = s.get("kernel")
    if kernel is None:
        parts = [s[k] for k in _V2_KERNEL_PARTS if k in s]
        slab = s.get("slab")
        if slab is None and ("slab_reclaimable" in s or "slab_unreclaimable" in s):
            slab = s.get("slab_reclaimable", 0) + s.get("slab_unreclaimable", 0)
        if slab is not None:
            parts.append(slab)
        kernel = sum(parts) if parts else None
    return Breakdown(
        anon=s.get("anon"),
        active_file=s.get("active_file"),
        inactive_file=s.get("inactive_file"),
        shmem=s.get("shmem"),
        kernel=kernel,
        swap=reading.swap_usage_bytes,
        dirty=s.get("file_dirty"),
        writeback=s.get("file_writeback"),
    )


# --------------------------------------------------------------------------------------------- limits


@dataclass(frozen=True, slots=True)
class EffectiveLimit:
    """The tightest memory limit between a cgroup and the root, and where it is set."""

    limit_bytes: int | None
    """None when no cgroup on the path has a limit."""
    level: LimitLevel | None
    """``container``, ``pod``, ``qos``, ``kubepods`` or ``other``; None when unlimited."""
    path: str | None = field(default=None)
    """The cgroup (relative to the hierarchy root) that sets it."""


def limit_level(path: str) -> LimitLevel:
    """The Kubernetes level of a cgroup path (``other`` for anything not under kubepods)."""
    ref = parse_cgroup_path(path)
    return "other" if ref is None else ref.level


def tighter(current: EffectiveLimit, path: str, limit_bytes: int | None) -> EffectiveLimit:
    """Fold one more cgroup (deeper than the ones in ``current``) into an effective limit.

    Walking from the root down, a deeper cgroup wins ties: the limit to change is the closest one
    (the kubelet derives the pod's limit from its containers'). On a tie the kernel may still charge
    the pod first, since the pod also holds its other containers' memory, and report the pod as
    ``oom_memcg`` (containerd/containerd#6323 saw the ``oom`` event land on the pod cgroup).
    """
    if limit_bytes is None:
        return current
    if current.limit_bytes is None or limit_bytes <= current.limit_bytes:
        return EffectiveLimit(limit_bytes=limit_bytes, level=limit_level(path), path=path)
    return current


UNLIMITED = EffectiveLimit(limit_bytes=None, level=None, path=None)


def effective_limit(chain: Sequence[tuple[str, int | None]]) -> EffectiveLimit:
    """The tightest limit on a path, given ``(cgroup path, own limit)`` from the root down to the cgroup."""
    result = UNLIMITED
    for path, limit in chain:
        result = tighter(result, path, limit)
    return result
