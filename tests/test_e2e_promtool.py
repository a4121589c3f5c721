"""A real scrape of ``/metrics`` passes Prometheus's own checker, ``promtool check metrics``.

promtool comes with Debian's ``prometheus`` package; ``scripts/test`` unpacks the binary
alone when it is missing. Where it cannot be had, the promtool test is skipped and
the families are still checked with the official client's parser
(``prometheus_client.parser``), which reads the text format but does not lint it.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from webhook_receiver import Receiver, free_port

from conftest import Daemon, agent

SECRET = "promtool secret"
# docs/http.md's list, by family name (a counter's family drops its _total).
FAMILIES = {
    "codyd_build_info": "gauge",
    "codyd_runs": "gauge",
    "codyd_runs_waiting": "gauge",
    "codyd_turns": "counter",
    "codyd_turn_duration_seconds": "histogram",
    "codyd_tokens": "counter",
    "codyd_cost_usd": "counter",
    "codyd_events": "counter",
    "codyd_rpc_requests": "counter",
    "codyd_rpc_duration_seconds": "histogram",
    "codyd_connections": "gauge",
    "codyd_mirror_lag_events": "gauge",
    "codyd_webhook_lag_events": "gauge",
}


@pytest.fixture
def scrape(daemon_factory: Callable[..., Daemon]) -> str:
    """/metrics of a daemon that ran a turn and has a webhook, so that series exist."""
    receiver = Receiver(SECRET.encode()).start()
    port = free_port()
    hooks = f'[{{name = "ops", url = "{receiver.url}", secret = "{SECRET}"}}]'
    try:
        daemon = daemon_factory(
            env={"CODYD_HTTP_LISTEN": f"127.0.0.1:{port}", "CODYD_WEBHOOKS": hooks}
        )
        run_id = daemon.start_run(agent("printer", 2), max_turns=1)["run_id"]
        daemon.wait_state(run_id, "completed")
        receiver.wait_delivered(1)
        return httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    finally:
        receiver.stop()


def test_every_family_of_spec_10_is_scraped(scrape: str) -> None:
    families = {f.name: f for f in text_string_to_metric_families(scrape)}
    for name, kind in FAMILIES.items():
        assert name in families, name
        assert families[name].type == kind, name
    assert [s.labels for s in families["codyd_webhook_lag_events"].samples] == [{"webhook": "ops"}]
    assert any(s.labels.get("outcome") == "ok" for s in families["codyd_turns"].samples)
    assert "run_id" not in scrape


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool is not installed")
def test_the_scrape_passes_promtool(scrape: str) -> None:
    checked = subprocess.run(
        ["promtool", "check", "metrics"],
        input=scrape,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout + checked.stderr == ""  # no lint warning either
