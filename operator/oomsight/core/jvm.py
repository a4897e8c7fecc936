"""The JVM's heap ceiling as its own flags set it: ``-Xmx``/``-XX:MaxHeapSize`` and ``-XX:MaxRAMPercentage``.

Pure: the agent reads ``/proc/<pid>/stat``, ``cmdline`` and ``environ`` (``oomsight.host.jvm``) and
passes the text here. Where the flags come from, in the order HotSpot applies them (a later one wins):

1. ``JAVA_TOOL_OPTIONS`` (read by the VM itself, before the command line);
2. ``JDK_JAVA_OPTIONS`` (JDK 9+, the ``java`` launcher inserts it before the command-line options);
3. the command line, up to the main class, ``-jar FILE``, ``-m MODULE`` or a source file: what
   follows belongs to the application (``java -jar app.jar -Xmx1g`` passes ``-Xmx1g`` to ``main``);
4. ``_JAVA_OPTIONS`` (read by the VM after the command line, so it overrides it).

Sources: openjdk/jdk ``src/hotspot/share/runtime/arguments.cpp`` (``Arguments::parse``: the tool
options, then the launcher's, then ``_JAVA_OPTIONS``); the ``java`` man page for JDK 17
(https://docs.oracle.com/en/java/javase/17/docs/specs/man/java.html: ``-Xmx size`` with ``k``/``K``,
``m``/``M``, ``g``/``G`` suffixes or bytes, ``-XX:MaxRAMPercentage=percent``, ``JDK_JAVA_OPTIONS``).
HotSpot also accepts ``t``/``T`` (``Arguments::atojulong``). A malformed value is ignored (the JVM
would not start with it, so whatever runs did not use it).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

_SIZE = re.compile(r"^([0-9]+)([kKmMgGtT]?)$")
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
_NUMBER = re.compile(r"^[0-9]+(?:\.[0-9]*)?$")
_WITH_VALUE = frozenset(
    {
        "-cp",
        "-classpath",
        "--class-path",
        "-p",
        "--module-path",
        "--upgrade-module-path",
        "--add-modules",
        "--limit-modules",
        "--add-reads",
        "--add-exports",
        "--add-opens",
        "--patch-module",
        "--source",
        "--enable-native-access",
        "-d",
        "--describe-module",
    }
)
"""Launcher options whose value is the next argument (``java -cp lib/* Main``)."""
_ENDS_OPTIONS = frozenset({"-jar", "-m", "--module"})
ENV_BEFORE = ("JAVA_TOOL_OPTIONS", "JDK_JAVA_OPTIONS")
ENV_AFTER = ("_JAVA_OPTIONS",)
ENV_NAMES = ENV_BEFORE + ENV_AFTER


@dataclass(frozen=True, slots=True)
class JvmFlags:
    """What a JVM's flags say about its heap; either may be None."""

    max_heap_bytes: int | None = None
    """``-Xmx`` / ``-XX:MaxHeapSize``: the heap's ceiling. HotSpot uses it over MaxRAMPercentage."""
    max_ram_percentage: float | None = None
    """``-XX:MaxRAMPercentage``: the heap's ceiling as a share of the container limit."""

    @property
    def empty(self) -> bool:
        return self.max_heap_bytes is None and self.max_ram_percentage is None


def parse_size(text: str) -> int | None:
    """``"96m"`` → 100663296; None when it is not a HotSpot size (digits, one optional k/m/g/t)."""
    m = _SIZE.match(text)
    if m is None:
        return None
    n = int(m.group(1)) * _UNITS[m.group(2).lower()]
    return n if n > 0 else None


def _percentage(text: str) -> float | None:
    if not _NUMBER.match(text):
        return None
    value = float(text)
    return value if 0 <= value <= 100 else None


def jvm_options(argv: Sequence[str]) -> list[str]:
    """The VM options of a ``java`` command line (``argv[0]`` is the launcher), in order."""
    out: list[str] = []
    it = iter(argv[1:])
    for arg in it:
        if arg in _ENDS_OPTIONS or not arg.startswith("-") or arg.endswith(".java"):
            break  # the main class, jar, module or source file: the rest is the application's
        if arg in _WITH_VALUE:
            next(it, None)
            continue
        out.append(arg)
    return out


def _fold(flags: JvmFlags, options: Sequence[str]) -> JvmFlags:
    heap, pct = flags.max_heap_bytes, flags.max_ram_percentage
    for opt in options:
        if opt.startswith("-Xmx"):
            heap = parse_size(opt[4:]) or heap
        elif opt.startswith("-XX:MaxHeapSize="):
            heap = parse_size(opt[len("-XX:MaxHeapSize=") :]) or heap
        elif opt.startswith("-XX:MaxRAMPercentage="):
            value = _percentage(opt[len("-XX:MaxRAMPercentage=") :])
            pct = value if value is not None else pct
    return JvmFlags(heap, pct)


def jvm_flags(argv: Sequence[str], environ: Mapping[str, str] | None = None) -> JvmFlags:
    """The heap flags in force for a JVM started as ``argv`` with ``environ`` (see the module doc)."""
    env = environ or {}
    flags = JvmFlags()
    for name in ENV_BEFORE:
        flags = _fold(flags, env.get(name, "").split())
    flags = _fold(flags, jvm_options(argv))
    for name in ENV_AFTER:
        flags = _fold(flags, env.get(name, "").split())
    return flags


def parse_cmdline(raw: bytes) -> list[str]:
    """``/proc/<pid>/cmdline``: NUL-separated arguments (the last one NUL-terminated)."""
    body = raw[:-1] if raw.endswith(b"\0") else raw
    return [a.decode("utf-8", "replace") for a in body.split(b"\0")] if body else []


def parse_environ(raw: bytes, names: Sequence[str] = ENV_NAMES) -> dict[str, str]:
    """The ``names`` variables of ``/proc/<pid>/environ`` (NUL-separated ``NAME=value``)."""
    out: dict[str, str] = {}
    wanted = {n.encode() for n in names}
    for item in raw.split(b"\0"):
        name, sep, value = item.partition(b"=")
        if sep and name in wanted:
            out[name.decode()] = value.decode("utf-8", "replace")
    return out


def parse_stat_identity(text: str) -> tuple[str, int] | None:
    """``/proc/<pid>/stat`` → (comm, start time in clock ticks since boot): a process's identity,
    since a pid can be reused. comm may hold spaces and parentheses, so it ends at the last ``)``
    (``fs/proc/array.c`` ``do_task_stat``); start time is field 22 (``proc(5)``)."""
    open_at, close_at = text.find("("), text.rfind(")")
    if open_at < 0 or close_at < open_at:
        return None
    rest = text[close_at + 2 :].split()
    if len(rest) < 20 or not rest[19].isdigit():
        return None
    return text[open_at + 1 : close_at], int(rest[19])


def memory_cgroup_leaf(text: str) -> str | None:
    """The last component of a process's memory cgroup, from ``/proc/<pid>/cgroup``: the v1 line whose
    controllers include ``memory`` (``9:memory:/kubepods/...``), else the v2 line (``0::/...``).

    Only the leaf is used: when the reader sits in another cgroup namespace the kernel prints the path
    relative to it (``/../../kubepods/...``, ``cgroup_path_ns``), but a container's leaf carries its
    runtime ID and names it alone."""
    v2: str | None = None
    for line in text.splitlines():
        _, sep, rest = line.partition(":")
        controllers, sep2, path = rest.partition(":")
        if not sep or not sep2:
            continue
        if "memory" in controllers.split(","):
            return path.rstrip("/").rsplit("/", 1)[-1] or None
        if controllers == "":
            v2 = path.rstrip("/").rsplit("/", 1)[-1] or None
    return v2
