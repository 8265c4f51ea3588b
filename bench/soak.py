"""Issue #10: does the whole suite pass N runs in a row on a busy machine?

Each run is a fresh clone of this checkout's commit (so nothing of the working tree, the
venv or an earlier run leaks in) running CI's command, `CI=true bash .ci/run`; `--parallel`
runs go at once, so each suite shares the cores with the others: the busy machine. It
prints one line per run (exit code, pytest's summary, wall time) and a last line with how
many passed; it exits 0 only if every run did. Each run's whole output stays in its log.

    .venv/bin/python bench/soak.py                     # 10 runs, 5 at a time (~1 h on 2 cores)
    .venv/bin/python bench/soak.py --runs 1 --parallel 1 --pytest-args tests/test_config.py

It is a script, not a test: a test cannot run the suite it belongs to.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[1]
PYTEST_SUMMARY = re.compile(r"^=+ (?P<summary>.* in [\d.]+s(?: \([\d:]+\))?) =+$", re.M)


@dataclass(frozen=True)
class RunResult:
    number: int
    returncode: int
    summary: str
    seconds: float
    log: Path

    @property
    def passed(self) -> bool:
        return self.returncode == 0


def commit_of(ref: str) -> str:
    return subprocess.run(
        ["git", "-C", str(REPOSITORY), "rev-parse", "--verify", f"{ref}^{{commit}}"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()


def run_suite(number: int, commit: str, workdir: Path, pytest_args: str) -> RunResult:
    clone = workdir / f"run{number}"
    log = workdir / f"run{number}.log"
    subprocess.run(["git", "clone", "--quiet", str(REPOSITORY), str(clone)], check=True)
    subprocess.run(["git", "-C", str(clone), "checkout", "--quiet", commit], check=True)
    env = {**os.environ, "CI": "true"}
    if pytest_args:
        env["PYTEST_ADDOPTS"] = pytest_args
    start = time.monotonic()
    with log.open("wb") as output:
        returncode = subprocess.run(
            ["bash", ".ci/run"], cwd=clone, env=env, stdout=output, stderr=subprocess.STDOUT
        ).returncode
    seconds = time.monotonic() - start
    summaries = PYTEST_SUMMARY.findall(log.read_text(errors="replace"))
    summary = summaries[-1] if summaries else "no pytest summary (see the log)"
    return RunResult(number, returncode, summary, seconds, log)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10, help="how many suites (default 10)")
    parser.add_argument("--parallel", type=int, default=5, help="suites at once (default 5)")
    parser.add_argument("--ref", default="HEAD", help="the commit to clone (default HEAD)")
    parser.add_argument(
        "--workdir", type=Path, help="for clones and logs (default: a new temp dir)"
    )
    parser.add_argument(
        "--pytest-args", default="", help="PYTEST_ADDOPTS for each run (a smoke run)"
    )
    args = parser.parse_args()

    commit = commit_of(args.ref)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="pushbot-soak-"))
    workdir.mkdir(parents=True, exist_ok=True)
    print(
        f"commit {commit[:10]}: {args.runs} runs, {args.parallel} at a time, in {workdir}",
        flush=True,
    )

    results: list[RunResult] = []
    with concurrent.futures.ThreadPoolExecutor(max_workers=args.parallel) as pool:
        futures = [
            pool.submit(run_suite, number, commit, workdir, args.pytest_args)
            for number in range(1, args.runs + 1)
        ]
        for future in concurrent.futures.as_completed(futures):
            result = future.result()
            results.append(result)
            print(
                f"run {result.number}: rc {result.returncode}, {result.summary}, "
                f"{result.seconds:,.0f} s wall ({result.log})",
                flush=True,
            )

    passed = sum(result.passed for result in results)
    print(f"{passed}/{len(results)} runs passed on {commit[:10]}")
    return 0 if passed == len(results) else 1


if __name__ == "__main__":
    sys.exit(main())
