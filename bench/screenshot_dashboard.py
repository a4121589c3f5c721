"""The screenshot in docs/http.md: the dashboard of a daemon with a few runs in every state.

``python -m bench.screenshot_dashboard [PATH]`` (default ``docs/dashboard.png``). It starts
a daemon with HTTP, starts runs of ``bench/agents/worker.py`` (running, paused, queued,
completed, failed, cancelled), opens ``/`` in headless chromium once the runs have some
tokens and cost, and saves the page.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from bench.browser import open_http_daemon, open_page, worker
from bench.common import REPO_DIR, Daemon

DEFAULT_PATH = REPO_DIR / "docs" / "dashboard.png"
# A command agent reporting what stopped it, by sentinel (docs/agents.md).
REPORT = "import json, sys, time; sys.stdin.read(); print(json.dumps({'__cody_event__': {}}))"


def reporter(**event: Any) -> list[str]:
    event_text = repr(event).replace("'@now+3600'", "time.time() + 3600")
    return [sys.executable, "-c", REPORT.replace("{}", event_text)]


RUNS: list[tuple[str, list[str], dict[str, Any]]] = [
    ("bump-deps", worker(0.02, 0.3), {"max_turns": 1}),
    (
        "nightly-upgrade",
        reporter(type="rate_limited", resets_at="@now+3600", message="5-hour limit reached"),
        {"account": "team-claude"},
    ),
    ("lint-fixes", reporter(type="auth_failed", message="OAuth token has expired"), {}),
    ("migrate-db", worker(0.02, 0.3, 1), {"max_consecutive_failures": 1}),
    ("flaky-tests", worker(0.25), {"labels": {"team": "ci"}}),
    ("refactor-auth", worker(0.2), {"labels": {"team": "web"}}),
    ("docs-sweep", worker(0.3), {}),
    ("port-to-trio", worker(0.15), {"labels": {"team": "core"}}),
    ("old-experiment", worker(0.3), {}),
    ("api-v2", worker(0.2), {"labels": {"team": "web"}}),
    ("perf-pass", worker(0.2), {}),
    ("release-notes", worker(0.2), {}),
    ("i18n-strings", worker(0.2), {"labels": {"team": "web"}}),
]
SHOWN = """(runs) => document.querySelectorAll('#runs-body .row').length >= runs
  && document.querySelector('#runs-body [data-state=paused]') !== null"""
TAIL = "() => document.getElementById('run-tail').textContent.length > 0"


def start(daemon: Daemon, name: str, command: list[str], extra: dict[str, Any]) -> str:
    spec = {
        "agent": "command",
        "name": name,
        "command": command,
        "workspace": str(daemon.workspace(name)),
        "prompt": "work",
        **extra,
    }
    return str(daemon.call("run.start", spec)["run_id"])


def wait(what: str, predicate: Any, timeout_s: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while not (value := predicate()):
        if time.monotonic() > deadline:
            raise SystemExit(f"screenshot: {what} did not happen within {timeout_s} s")
        time.sleep(0.05)
    return value


def state(daemon: Daemon, run_id: str) -> str:
    return str(daemon.call("run.status", {"run_id": run_id})["state"])


def stage(daemon: Daemon) -> None:
    ids = {name: start(daemon, name, command, extra) for name, command, extra in RUNS}
    wait("bump-deps completing", lambda: state(daemon, ids["bump-deps"]) == "completed")
    wait("migrate-db failing", lambda: state(daemon, ids["migrate-db"]) == "failed")
    wait("lint-fixes asking for a login", lambda: state(daemon, ids["lint-fixes"]) == "paused")
    daemon.call("run.cancel", {"run_id": ids["old-experiment"], "reason": "superseded"})

    def tokens() -> int:
        return int(
            daemon.call("run.status", {"run_id": ids["docs-sweep"]})["stats"]["tokens"]["total"]
        )

    wait("some tokens", tokens)
    daemon.call("run.pause", {"run_id": ids["docs-sweep"], "now": True, "reason": "review first"})


def main() -> int:
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_PATH
    with open_http_daemon("max_active_runs = 6") as (daemon, base), open_page(1200, 520) as page:
        stage(daemon)
        page.goto(base + "/")
        page.wait_for_function(SHOWN, arg=len(RUNS), timeout=10_000)
        time.sleep(1.5)  # a picture, not a test: let the numbers tick for a moment
        page.screenshot(path=str(path), full_page=True)
        if len(sys.argv) > 2:  # a second picture: one run's page
            page.click("#runs-body [data-state=running] .c-run a")
            page.wait_for_function(TAIL, timeout=10_000)
            time.sleep(1.5)
            page.screenshot(path=sys.argv[2], full_page=True)
    print(f"saved {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
