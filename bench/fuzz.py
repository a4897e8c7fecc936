"""The million-input fuzz run: the four text readers under atheris (coverage-guided libFuzzer).

The targets and their properties are ``tests/fuzzkit.py`` (the same ones ``tests/test_fuzz_inputs.py``
runs with hypothesis in every test run): a target returns, or raises the project's own error with a
one-line message; anything else, or an incident without a kill line behind it (in particular any
incident from text with no kill line), is a crash. Each target runs in its own process, seeded
with the real corpus in ``tests/fixtures/`` (each captured log; each /dev/kmsg record line), with
the oomsight package instrumented for coverage, for its share of ``--inputs``; libFuzzer's own
count of executed inputs and its wall time are printed as one table.

Why atheris and not hypothesis here: the per-input cost of hypothesis' generation engine (~1 ms)
makes a million inputs an hour-long run on two cores; libFuzzer mutates in C and steers by coverage,
so the same budget explores more. It is a bench-only dependency (``pip install atheris``, or the
``fuzz`` extra); the normal suite needs only hypothesis.

    .venv/bin/pip install -e '.[test,fuzz]'
    .venv/bin/python bench/fuzz.py                   # 1,000,000 inputs over the four targets
    .venv/bin/python bench/fuzz.py --inputs 20000    # a quick look
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "operator")]

# Shares of the input budget: cheap targets get more; the log reader parses a whole log per input.
SHARES = {"logtext": 0.02, "kmsg": 0.66, "records": 0.04, "csv": 0.28}
MAX_LEN = {"kmsg": 1024, "logtext": 1 << 14, "records": 1 << 14, "csv": 4096}
NAMES = {
    "kmsg": "kmsg record parser (core.kmsg)",
    "logtext": "log-text detector/reader (core.logtext)",
    "records": "report assembler (core.oomreport)",
    "csv": "usage CSV reader (core.usage_csv)",
}
CSV_SEEDS = [
    "timestamp,workload,container,working_set_bytes\n2026-11-23T10:00:00Z,web,app,536870912\n",
    "timestamp,workload,container,working_set_bytes,pod,limit_bytes,oom_killed,anon_bytes,shmem_bytes,"
    "kernel_bytes,jvm_max_heap_bytes\n1700000000,api,jvm,3.2e+08,api-0,536870912,1,2e8,1e6,4e6,268435456\n"
    "1700000060,api,jvm,3.3e+08,api-1,536870912,false,2.1e8,,,\n",
    "timestamp,workload,container,working_set_bytes,oom_killed\n"
    "2026-11-23T10:00:00,batch,worker,1000,yes\n2026-11-23T10:05:00+02:00,batch,worker,2000,no\n",
]


def seeds(target: str, into: Path) -> int:
    import fuzzkit

    into.mkdir(parents=True)
    if target == "kmsg":
        items = [ln.encode() for ln in fuzzkit.KMSG_LINES]
    elif target in ("logtext", "records"):
        items = [text.encode() for text in fuzzkit.CORPUS.values()]
    else:
        items = [s.encode() for s in CSV_SEEDS]
    for i, data in enumerate(items):
        (into / f"seed-{i:04d}").write_bytes(data)
    return len(items)


def worker(target: str, corpus: Path, runs: int, max_seconds: int, artifacts: Path) -> None:
    import atheris

    with atheris.instrument_imports(include=["oomsight"]):
        import fuzzkit

    def text(data: bytes) -> str:
        return data.decode("utf-8", errors="replace")

    one = {
        "kmsg": lambda d: fuzzkit.target_kmsg(text(d).rstrip("\n")),
        "logtext": lambda d: fuzzkit.target_logtext(text(d)),
        "records": lambda d: fuzzkit.target_records(
            [ln.split(";", 1)[1] if ";" in ln and ln[:1].isdigit() else ln for ln in text(d).split("\n")]
        ),
        "csv": lambda d: fuzzkit.target_csv(text(d)),
    }[target]
    atheris.Setup(
        [
            sys.argv[0],
            str(corpus),
            f"-runs={runs}",
            f"-max_len={MAX_LEN[target]}",
            f"-max_total_time={max_seconds}",
            f"-artifact_prefix={artifacts}/",
            "-print_final_stats=1",
        ],
        one,
    )
    atheris.Fuzz()


def run_target(target: str, runs: int, max_seconds: int, work: Path, keep: Path | None) -> dict:
    corpus = work / target / "corpus"
    n_seeds = seeds(target, corpus)
    artifacts = (keep or work) / f"{target}-artifacts"
    artifacts.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, __file__, "--worker", target, "--corpus", str(corpus), "--runs", str(runs),
           "--max-seconds", str(max_seconds), "--artifacts", str(artifacts)]  # fmt: skip
    t0 = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, errors="replace", check=False)
    wall = time.monotonic() - t0
    log = proc.stdout + proc.stderr
    done = re.search(r"Done (\d+) runs in (\d+) second", log)
    execs = (
        int(done.group(1))
        if done
        else int((re.findall(r"stat::number_of_executed_units: (\d+)", log) or ["0"])[-1])
    )
    cov = re.findall(r"cov: (\d+)", log)
    crashes = sorted(p.name for p in artifacts.iterdir() if p.name.startswith(("crash-", "oom-", "timeout-")))
    excerpt = ""
    if proc.returncode != 0 or crashes:
        tb = log[log.rfind("=== Uncaught Python exception") :] if "Uncaught Python" in log else log[-2000:]
        excerpt = tb[:2000]
    return {
        "target": NAMES[target],
        "seeds": n_seeds,
        "inputs": execs,
        "seconds": round(wall, 1),
        "inputs_per_s": round(execs / wall) if wall else 0,
        "coverage_edges": int(cov[-1]) if cov else None,
        "crashes": len(crashes) + (1 if proc.returncode not in (0,) and not crashes else 0),
        "exit": proc.returncode,
        "excerpt": excerpt,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--inputs", type=int, default=1_000_000, help="total over the four targets")
    ap.add_argument(
        "--targets", default=",".join(SHARES), help="comma-separated subset of " + ",".join(SHARES)
    )
    ap.add_argument("--max-seconds", type=int, default=3600, help="per target, a safety stop")
    ap.add_argument("--jobs", type=int, default=2, help="targets run in parallel")
    ap.add_argument("--keep", help="keep crash inputs in this directory")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--corpus", help=argparse.SUPPRESS)
    ap.add_argument("--runs", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--artifacts", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(args.worker, Path(args.corpus), args.runs, args.max_seconds, Path(args.artifacts))
        return 0
    try:
        import atheris  # noqa: F401
    except ImportError:
        print("fuzz: atheris is not installed; run `.venv/bin/pip install -e '.[fuzz]'` and retry")
        return 2
    targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    unknown = [t for t in targets if t not in SHARES]
    if unknown:
        print(f"fuzz: unknown target(s) {', '.join(unknown)}; choose from {', '.join(SHARES)}")
        return 2
    total_share = sum(SHARES[t] for t in targets)
    keep = Path(args.keep) if args.keep else None
    from concurrent.futures import ThreadPoolExecutor

    with tempfile.TemporaryDirectory(prefix="oomsight-fuzz-") as tmp:
        work = Path(tmp)
        t0 = time.monotonic()
        with ThreadPoolExecutor(max_workers=args.jobs) as pool:
            futures = [
                pool.submit(
                    run_target,
                    t,
                    max(1, round(args.inputs * SHARES[t] / total_share)),
                    args.max_seconds,
                    work,
                    keep,
                )
                for t in targets
            ]
            results = [f.result() for f in futures]
        wall = time.monotonic() - t0
        if keep is None:
            shutil.rmtree(work, ignore_errors=True)
    print(
        f"{'target':42} {'seeds':>6} {'inputs':>10} {'seconds':>8} {'inputs/s':>9} "
        f"{'edges':>6} {'crashes':>8}"
    )
    for r in results:
        print(
            f"{r['target']:42} {r['seeds']:>6} {r['inputs']:>10,} {r['seconds']:>8.0f} "
            f"{r['inputs_per_s']:>9,} "
            f"{r['coverage_edges'] or '-':>6} {r['crashes']:>8}"
        )
    inputs = sum(r["inputs"] for r in results)
    crashes = sum(r["crashes"] for r in results)
    print(
        f"{'total':42} {'':>6} {inputs:>10,} {wall:>8.0f} {round(inputs / wall):>9,} {'':>6} {crashes:>8}"
        "   (crash = an exception other than the project's one-line errors, or an incident without a"
        " kill line)"
    )
    for r in results:
        if r["excerpt"]:
            print(f"--- {r['target']} (exit {r['exit']}):\n{r['excerpt']}")
    print(
        json.dumps(
            {
                "inputs": inputs,
                "crashes": crashes,
                "seconds": round(wall),
                "cpus": os.cpu_count(),
                "targets": [{k: v for k, v in r.items() if k != "excerpt"} for r in results],
            }
        )
    )
    return 1 if crashes else 0


if __name__ == "__main__":
    sys.exit(main())
