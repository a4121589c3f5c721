"""Prometheus metrics (docs/http.md) on a registry of the daemon's own.

Counters are incremented where things happen (a turn's end as the store appends
its event, an RPC as it is answered); gauges are read from the store, the
supervisor and the mirror at scrape time, so a quiet daemon pays nothing for them.
No run id is ever a label: the label values are bounded sets.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from codyd import __version__
from codyd.model.events import Event
from codyd.model.record import RunRecord
from codyd.model.state import Phase

if TYPE_CHECKING:
    from codyd.http.view import HttpDaemon

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# A turn lasts seconds to hours.
TURN_BUCKETS = (1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0, 7200.0)
# An RPC is answered in microseconds (ping) to seconds (a store under load).
RPC_BUCKETS = (
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
    0.25, 0.5, 1.0, 2.5, 5.0,
)  # fmt: skip
TOKEN_KINDS = ("input", "output", "cached")
UNKNOWN_METHOD = "unknown"  # the label of any method codyd does not have: clients choose names


class Metrics:
    def __init__(self, daemon: HttpDaemon, methods: Iterable[str]) -> None:
        # A `_created` series per label set would double what a scrape carries, for nothing
        # Prometheus uses: counters here start with the daemon (codyd_build_info says when).
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.registry = CollectorRegistry(auto_describe=False)
        self.known_methods = frozenset(methods)
        self.turns = Counter(
            "codyd_turns", "Turns ended, by outcome", ["agent", "outcome"], registry=self.registry
        )
        self.turn_duration = Histogram(
            "codyd_turn_duration_seconds",
            "How long turns lasted",
            ["agent"],
            buckets=TURN_BUCKETS,
            registry=self.registry,
        )
        self.tokens = Counter(
            "codyd_tokens", "Tokens used by turns", ["agent", "kind"], registry=self.registry
        )
        self.cost = Counter(
            "codyd_cost_usd", "Cost reported by turns, in USD", ["agent"], registry=self.registry
        )
        self.rpc_requests = Counter(
            "codyd_rpc_requests",
            "Requests answered (socket and HTTP), by result code",
            ["method", "code"],
            registry=self.registry,
        )
        self.rpc_duration = Histogram(
            "codyd_rpc_duration_seconds",
            "Time to answer a request (a stream: its whole life)",
            ["method"],
            buckets=RPC_BUCKETS,
            registry=self.registry,
        )
        self.registry.register(_StateCollector(daemon))

    def observe_event(self, record: RunRecord, event: Event) -> None:
        """Called by the store for every event appended; only a turn's end counts here."""
        if event.type != "turn_completed":
            return
        agent = record.spec.agent
        data = event.data
        self.turns.labels(agent, str(data.get("outcome"))).inc()
        duration_ms = data.get("duration_ms")
        if isinstance(duration_ms, int | float):
            self.turn_duration.labels(agent).observe(duration_ms / 1000)
        tokens = data.get("tokens") or {}
        for kind in TOKEN_KINDS:
            count = tokens.get(kind)
            if isinstance(count, int) and count > 0:
                self.tokens.labels(agent, kind).inc(count)
        cost = data.get("cost_usd")
        if isinstance(cost, int | float) and cost > 0:
            self.cost.labels(agent).inc(cost)

    def observe_request(self, method: str, response: dict[str, Any], seconds: float) -> None:
        """Called once per answered request, socket or HTTP."""
        if method not in self.known_methods:
            method = UNKNOWN_METHOD
        error = response.get("error")
        code = "ok" if error is None else str(error.get("code"))
        self.rpc_requests.labels(method, code).inc()
        self.rpc_duration.labels(method).observe(seconds)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


# The reasons a run waits (docs/protocol.md 5.10, operations.md for disk_full).
WAIT_REASONS = ("rate_limited", "account_limited", "unavailable", "disk_full")


class _StateCollector(Collector):
    """The gauges, and the counters kept elsewhere, read when scraped."""

    def __init__(self, daemon: HttpDaemon) -> None:
        self.daemon = daemon
        self.first_gid = daemon.store.next_gid

    def collect(self) -> Iterator[Metric]:
        daemon = self.daemon
        build = GaugeMetricFamily("codyd_build_info", "codyd's version", labels=["version"])
        build.add_metric([__version__], 1)
        yield build
        runs = GaugeMetricFamily("codyd_runs", "Runs, by state", labels=["state"])
        for state, count in daemon.supervisor.counts().items():
            runs.add_metric([state], count)
        yield runs
        # Runs whose next turn is held back (docs/protocol.md 5.10), every reason always shown.
        waiting = dict.fromkeys(WAIT_REASONS, 0)
        for record in daemon.store.live.values():
            wait = record.wait
            if wait is not None and record.phase is Phase.WAITING:
                reason = str(wait.get("reason"))
                waiting[reason] = waiting.get(reason, 0) + 1
        by_reason = GaugeMetricFamily(
            "codyd_runs_waiting", "Runs waiting, by reason", labels=["reason"]
        )
        for reason, count in waiting.items():
            by_reason.add_metric([reason], count)
        yield by_reason
        yield CounterMetricFamily(
            "codyd_events",
            "Events appended since codyd started",
            value=daemon.store.next_gid - self.first_gid,
        )
        yield GaugeMetricFamily(
            "codyd_connections",
            "Clients connected to the socket",
            value=len(daemon.server.connections),
        )
        lag = daemon.mirror.lag_events if daemon.mirror is not None else 0
        yield GaugeMetricFamily(
            "codyd_mirror_lag_events", "Events not yet mirrored to Redis", value=lag
        )
        webhook_lag = GaugeMetricFamily(
            "codyd_webhook_lag_events",
            "Events committed after a webhook's cursor (not yet delivered)",
            labels=["webhook"],
        )
        for name, delivery in daemon.webhooks.deliveries.items():
            webhook_lag.add_metric([name], delivery.lag_events)
        yield webhook_lag
