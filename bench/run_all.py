"""Run every foundation benchmark; print one combined table; write ``results/foundation.json``.

``python -m bench.run_all``; exit status 1 if any target was missed.
"""

from __future__ import annotations

import sys
import time

from bench import bench_cli, bench_mirror, bench_output, bench_ping
from bench.common import BenchResult, report

BENCHMARKS = (bench_ping, bench_cli, bench_output, bench_mirror)


def main() -> int:
    results: list[BenchResult] = []
    for module in BENCHMARKS:
        began = time.perf_counter()
        result = module.run()
        result.details["bench_seconds"] = time.perf_counter() - began
        print(f"{result.name}: done in {result.details['bench_seconds']:.1f} s", file=sys.stderr)
        results.append(result)
    return report(results, "foundation")


if __name__ == "__main__":
    sys.exit(main())
