"""The dashboard with 500 runs: how fast a change reaches its row, and how busy the page is.

A daemon with HTTP holds 500 runs: 50 running ``bench/agents/worker.py`` (a line every
0.5 s, with token and cost sentinels, so the all-runs stream carries a steady flow), the
rest queued, half of those paused. Headless chromium opens ``/`` and the benchmark measures:

* the first render: from navigation to 500 rows in the table;
* event → row: a run is paused (or resumed) over the socket; a MutationObserver in the page
  notes when the row's state cell shows the new state (both clocks are this machine's);
* the main thread's busy time (the DevTools ``TaskDuration`` metric) and its long tasks
  (over 50 ms) over a 10 s window of that flow, with the running runs' rows on screen,
  and the events read per second.

``python -m bench.bench_dashboard``; the table is printed and the JSON is written to
``bench/results/dashboard.json``.
"""

from __future__ import annotations

import sys
import time
from typing import Any

from bench.browser import open_http_daemon, open_page, worker
from bench.common import BenchResult, Daemon, Row, percentile, report

RUNS = 500
ACTIVE = 50
SAMPLES = 40
WINDOW_S = 10.0
FIRST_RENDER_TARGET_MS = 3000.0
ROW_P99_TARGET_MS = 1000.0
BUSY_TARGET = 0.5

OBSERVE = """() => {
  window.__seen = {};
  const body = document.getElementById('runs-body');
  new MutationObserver((mutations) => {
    const at = performance.timeOrigin + performance.now();
    for (const m of mutations) {
      const cell = m.target.nodeType === 1 ? m.target : m.target.parentElement;
      if (!cell || !cell.classList || !cell.classList.contains('c-state')) continue;
      const key = cell.parentElement.dataset.runId + ' ' + cell.textContent;
      if (!(key in window.__seen)) window.__seen[key] = at;
    }
  }).observe(body, {subtree: true, childList: true, characterData: true});
  window.__long = 0;
  new PerformanceObserver((list) => { window.__long += list.getEntries().length; })
    .observe({type: 'longtask', buffered: false});
}"""


ON_SCREEN = """() => [...document.querySelectorAll('#runs-body .row[data-state=running]')]
  .filter((row) => { const r = row.getBoundingClientRect();
    return r.bottom > 0 && r.top < window.innerHeight; }).length"""


def start_runs(daemon: Daemon) -> tuple[list[str], list[str]]:
    def start(n: int, command: list[str]) -> str:
        spec = {
            "agent": "command",
            "name": f"bench-{n:03d}",
            "command": command,
            "workspace": str(daemon.workspace(f"ws{n}")),
            "prompt": "work",
            "labels": {"bench": "dashboard", "batch": str(n % 10)},
        }
        return str(daemon.call("run.start", spec)["run_id"])

    active = [start(n, worker(0.5)) for n in range(ACTIVE)]
    waiting = [start(n, worker(0.5)) for n in range(ACTIVE, RUNS)]
    for run_id in waiting[::2]:
        daemon.call("run.pause", {"run_id": run_id})
    return active, waiting[1::2]


def first_render(page: Any, base: str) -> float:
    began = time.perf_counter()
    page.goto(base + "/")
    page.wait_for_function(
        f"() => document.querySelectorAll('#runs-body .row').length >= {RUNS}"
        " && window.codydDashboard.table.feed !== null",
        timeout=60_000,
        polling=10,
    )
    elapsed_ms = (time.perf_counter() - began) * 1000
    page.evaluate(OBSERVE)
    # The running runs are the oldest, so the last rows: bring them on screen, where their
    # changes must be drawn (a row off screen is skipped).
    page.evaluate("() => window.scrollTo(0, document.body.scrollHeight)")
    return elapsed_ms


def row_latencies(page: Any, daemon: Daemon, queued: list[str]) -> list[float]:
    latencies = []
    for run_id in queued[:SAMPLES]:
        for action, shown in (("pause", "paused"), ("resume", "queued")):
            sent = time.time() * 1000
            daemon.call(f"run.{action}", {"run_id": run_id})
            key = f"{run_id} {shown}"
            page.wait_for_function(f"() => {key!r} in window.__seen", timeout=10_000, polling=5)
            seen = page.evaluate(f"() => window.__seen[{key!r}]")
            latencies.append(seen - sent)
            page.evaluate(f"() => {{ delete window.__seen[{key!r}]; }}")
    return latencies


def busy_window(page: Any) -> dict[str, float]:
    cdp = page.context.new_cdp_session(page)
    cdp.send("Performance.enable")

    def sample() -> tuple[float, float, int]:
        metrics = {m["name"]: m["value"] for m in cdp.send("Performance.getMetrics")["metrics"]}
        received = page.evaluate("() => window.codydDashboard.table.received")
        return metrics["TaskDuration"], time.perf_counter(), received

    long_before = page.evaluate("() => window.__long")
    task0, wall0, events0 = sample()
    time.sleep(WINDOW_S)  # the measurement window: the page runs on its own meanwhile
    task1, wall1, events1 = sample()
    long_tasks = page.evaluate("() => window.__long") - long_before
    on_screen = page.evaluate(ON_SCREEN)
    return {
        "running_rows_on_screen": float(on_screen),
        "busy": (task1 - task0) / (wall1 - wall0),
        "events_per_s": (events1 - events0) / (wall1 - wall0),
        "long_tasks": float(long_tasks),
        "window_s": wall1 - wall0,
    }


def run() -> BenchResult:
    with open_http_daemon(f"max_active_runs = {ACTIVE}") as (daemon, base):
        _active, queued = start_runs(daemon)
        with open_page(1280, 900) as page:
            render_ms = first_render(page, base)
            steady = busy_window(page)
            latencies = row_latencies(page, daemon, queued)
    p50, p99 = percentile(latencies, 50), percentile(latencies, 99)
    rows = [
        Row(
            f"first render of {RUNS} runs",
            render_ms,
            None,
            "ms",
            f"< {FIRST_RENDER_TARGET_MS:g} ms",
            render_ms < FIRST_RENDER_TARGET_MS,
        ),
        Row("event → row updated, p50", p50, None, "ms"),
        Row(
            "event → row updated, p99",
            p99,
            None,
            "ms",
            f"< {ROW_P99_TARGET_MS:g} ms",
            p99 < ROW_P99_TARGET_MS,
        ),
        Row(
            f"main thread busy ({ACTIVE} runs printing)",
            steady["busy"] * 100,
            None,
            "%",
            f"< {BUSY_TARGET * 100:g} %",
            steady["busy"] < BUSY_TARGET,
        ),
        Row("long tasks (> 50 ms) in the window", steady["long_tasks"], None, "count"),
        Row("events read by the page", steady["events_per_s"], None, "events/s"),
        Row("running runs' rows on screen", steady["running_rows_on_screen"], None, "rows"),
    ]
    details = {
        "runs": RUNS,
        "active": ACTIVE,
        "samples": len(latencies),
        "latencies_ms": latencies,
        "first_render_ms": render_ms,
        **steady,
    }
    return BenchResult("dashboard", rows, details)


def main() -> int:
    return report([run()], "dashboard")


if __name__ == "__main__":
    sys.exit(main())
