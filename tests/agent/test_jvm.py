"""JVM heap flags from real command lines (oomsight.core.jvm).

Each command line is the argv the kernel shows in /proc/<pid>/cmdline for the image's ENTRYPOINT,
taken from public repositories (path given). ``sh -c "java ..."`` entrypoints are split the way sh
splits them: the java process's own argv is what the agent reads. Rows marked "constructed" are ours,
to pin HotSpot's rules (arguments.cpp order, the java(1) man page for JDK 17).
"""

from __future__ import annotations

import pytest

from oomsight.core.jvm import (
    JvmFlags,
    jvm_flags,
    jvm_options,
    memory_cgroup_leaf,
    parse_cmdline,
    parse_environ,
    parse_size,
    parse_stat_identity,
)

MI = 1 << 20
GI = 1 << 30


@pytest.mark.parametrize(
    ("argv", "env", "expected"),
    [
        # github.com/shuraG/developersAPISpringBoot Dockerfile ENTRYPOINT
        (["java", "-Xms256m", "-Xmx256m", "-Xss512k", "-XX:+UnlockExperimentalVMOptions",
          "-XX:+UseCGroupMemoryLimitForHeap", "-jar", "/app.jar"], {}, JvmFlags(256 * MI)),
        # github.com/addozhang/tekton-demo Dockerfile: sh -c "java -Xmx128m -Xms64m -jar app.jar"
        (["java", "-Xmx128m", "-Xms64m", "-jar", "app.jar"], {}, JvmFlags(128 * MI)),
        # github.com/hi1summer/springcloud-gateway Dockerfile: ["java","-Xms2048m -Xmx2048m -jar","/app.jar"]
        # is ONE argument starting with -Xms (the JVM rejects it as an initial heap size): no -Xmx.
        (["java", "-Xms2048m -Xmx2048m -jar", "/app.jar"], {}, JvmFlags()),
        # github.com/Simple-Studio-CR/Samyx Dockerfile ENTRYPOINT
        (["java", "-XX:+UseContainerSupport", "-XX:MaxRAMPercentage=90.0", "-jar", "/app.jar"], {},
         JvmFlags(None, 90.0)),
        # github.com/scott-k-huang/ProcrastinatorsWellnessCountDownApi Dockerfile ENTRYPOINT
        (["java", "-XX:MaxRAMPercentage=75.0", "-jar", "app.jar"], {}, JvmFlags(None, 75.0)),
        # github.com/canmogol/spring-k8s-webflux-event Dockerfile (sh form, ${OPTIONS} empty)
        (["java", "-XX:MaxRAMPercentage=100", "-XX:MinRAMPercentage=100", "-jar", "/app.jar"], {},
         JvmFlags(None, 100.0)),
        # github.com/shehzad171/rapidapi Dockerfile: no heap flag at all
        (["java", "-jar", "k8s.jar"], {}, JvmFlags()),
        # constructed: the last -Xmx wins; k/g/t suffixes, upper case, bytes
        (["/usr/bin/java", "-Xmx1g", "-Xmx512M", "Main"], {}, JvmFlags(512 * MI)),
        (["java", "-Xmx2G", "Main"], {}, JvmFlags(2 * GI)),
        (["java", "-Xmx1048576", "Main"], {}, JvmFlags(MI)),
        (["java", "-Xmx98304k", "Main"], {}, JvmFlags(96 * MI)),
        (["java", "-XX:MaxHeapSize=1t", "Main"], {}, JvmFlags(1 << 40)),
        # constructed: after the jar / main class / module the arguments are the application's
        (["java", "-jar", "app.jar", "-Xmx8g"], {}, JvmFlags()),
        (["java", "-cp", "-Xmx4g", "Main"], {}, JvmFlags()),  # -cp takes the next argument
        (["java", "-Xmx256m", "-m", "app/app.Main", "-Xmx8g"], {}, JvmFlags(256 * MI)),
        (["java", "-Xmx96m", "Hello.java", "-Xmx1g"], {}, JvmFlags(96 * MI)),
        # constructed: malformed values are ignored (the JVM would not have started with them)
        (["java", "-Xmx", "-Xmx12x", "-XX:MaxRAMPercentage=abc", "Main"], {}, JvmFlags()),
        (["java", "-Xmx64m", "-Xmx1.5g", "Main"], {}, JvmFlags(64 * MI)),
        # constructed: env order JAVA_TOOL_OPTIONS < JDK_JAVA_OPTIONS < command line < _JAVA_OPTIONS
        (["java", "-jar", "app.jar"], {"JAVA_TOOL_OPTIONS": "-Xmx1G"}, JvmFlags(GI)),
        (["java", "-jar", "app.jar"],
         {"JAVA_TOOL_OPTIONS": "-XX:+UseContainerSupport -XX:MaxRAMPercentage=75"}, JvmFlags(None, 75.0)),
        (["java", "-jar", "app.jar"], {"JAVA_TOOL_OPTIONS": "-Xmx1g", "JDK_JAVA_OPTIONS": "-Xmx2g"},
         JvmFlags(2 * GI)),
        (["java", "-Xmx3g", "-jar", "app.jar"], {"JDK_JAVA_OPTIONS": "-Xmx2g"}, JvmFlags(3 * GI)),
        (["java", "-Xmx3g", "-jar", "app.jar"], {"_JAVA_OPTIONS": "-Xmx512m"}, JvmFlags(512 * MI)),
        # both kinds: reported both; the consumer lets -Xmx win, as HotSpot does
        (["java", "-XX:MaxRAMPercentage=80", "-Xmx1g", "Main"], {}, JvmFlags(GI, 80.0)),
    ],
)  # fmt: skip
def test_jvm_flags(argv, env, expected):
    assert jvm_flags(argv, env) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [("96m", 96 * MI), ("96M", 96 * MI), ("1g", GI), ("512k", 512 << 10), ("100", 100), ("2T", 2 << 40),
     ("0", None), ("", None), ("1.5g", None), ("12x", None), ("-1m", None), ("1mb", None)],
)  # fmt: skip
def test_parse_size(text, expected):
    assert parse_size(text) == expected


def test_jvm_options_skip_launcher_values_and_stop_at_the_application():
    argv = ["java", "--add-opens", "java.base/java.lang=ALL-UNNAMED", "-Dx=1", "-Xmx1g", "-jar", "a", "-v"]
    assert jvm_options(argv) == ["-Dx=1", "-Xmx1g"]


def test_proc_files():
    # Captured on this machine (Linux 6.18.44, OpenJDK 17.0.15) from `java -Xmx96m Hold.java`: NUL-ended.
    assert parse_cmdline(b"java\x00-Xmx96m\x00Hold.java\x00") == ["java", "-Xmx96m", "Hold.java"]
    assert parse_cmdline(b"") == []
    assert parse_cmdline(b"java\x00-Xmx1g") == ["java", "-Xmx1g"]  # a rewritten argv without the last NUL
    env = b"PATH=/usr/bin\x00JAVA_TOOL_OPTIONS=-Xmx1G -Dx=a=b\x00HOME=/root\x00_JAVA_OPTIONS=\x00"
    assert parse_environ(env) == {"JAVA_TOOL_OPTIONS": "-Xmx1G -Dx=a=b", "_JAVA_OPTIONS": ""}


def test_stat_identity():
    # /proc/<pid>/stat of that java process (this machine, 6.18.44), cut after field 23.
    line = "1743 (java) S 1 1738 31161 0 -1 4194304 19289 0 18 0 151 17 0 0 20 0 21 0 505579 2739306496"
    assert parse_stat_identity(line) == ("java", 505579)
    odd = "7 (a) b (c)) R 1 7 7 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 555 0 0"  # comm with ") " inside
    assert parse_stat_identity(odd) == ("a) b (c)", 555)
    assert parse_stat_identity("garbage") is None
    assert parse_stat_identity("1 (x) S 1 2") is None


# /proc/<pid>/cgroup of a process on this machine (Linux 6.18.44, hybrid layout), captured.
HYBRID = """9:name=systemd:/
8:pids:/
7:blkio:/
6:freezer:/
5:devices:/
4:memory:/process_api/3f80b3149ec101898c521a5339a2a1e9
3:cpuset:/
2:cpuacct:/
1:cpu:/
0::/
"""


@pytest.mark.parametrize(
    ("text", "leaf"),
    [
        (HYBRID, "3f80b3149ec101898c521a5339a2a1e9"),
        # constructed from the kubelet's naming: v1 with merged controllers; v2 systemd driver, read from
        # inside another cgroup namespace (cgroup_path_ns prints it relative: /../..)
        ("5:memory,hugetlb:/kubepods/burstable/pod1/abc123\n", "abc123"),
        (
            "0::/../../kubepods.slice/kubepods-pod1.slice/cri-containerd-abc.scope\n",
            "cri-containerd-abc.scope",
        ),
        ("4:memory:/\n0::/\n", None),
        ("garbage\n", None),
    ],
)
def test_memory_cgroup_leaf(text, leaf):
    assert memory_cgroup_leaf(text) == leaf
