"""Client side of the anchors, run by the anchors' own Python (``bench/.venv-anchors``).

It times calls with each anchor's own client library (supervisor's XML-RPC
transport, circus's zmq client) and starts programs, printing one JSON object on
stdout. It imports nothing from codyd or the benchmarks, which that Python lacks.

    probe.py supervisord SOCKET time METHOD ARGS_JSON MAX_CALLS BUDGET_S
    probe.py supervisord SOCKET start-all
    probe.py circus ENDPOINT time COMMAND_JSON MAX_CALLS BUDGET_S
    probe.py circus ENDPOINT start NAME...
"""

import json
import sys
import time
from collections.abc import Callable
from typing import Any

WARMUP_CALLS = 5
MIN_CALLS = 10


def supervisord_proxy(socket_path: str) -> Any:
    import xmlrpc.client

    from supervisor.xmlrpc import SupervisorTransport  # type: ignore[import-not-found]

    transport = SupervisorTransport(None, None, "unix://" + socket_path)
    return xmlrpc.client.ServerProxy("http://127.0.0.1", transport=transport)


def circus_client(endpoint: str) -> Any:
    from circus.client import CircusClient  # type: ignore[import-not-found]

    return CircusClient(endpoint=endpoint, timeout=60)


def timed(call: Callable[[], Any], max_calls: int, budget_s: float) -> list[float]:
    """Latencies of up to ``max_calls`` calls, stopping after ``budget_s`` (at least MIN_CALLS)."""
    for _ in range(WARMUP_CALLS):
        call()
    latencies: list[float] = []
    clock = time.perf_counter
    stop_at = clock() + budget_s
    while len(latencies) < max_calls and (len(latencies) < MIN_CALLS or clock() < stop_at):
        began = clock()
        call()
        latencies.append(clock() - began)
    return latencies


def supervisord(socket_path: str, action: str, args: list[str]) -> dict[str, Any]:
    proxy = supervisord_proxy(socket_path)
    if action == "time":
        method, params = args[0], json.loads(args[1])
        max_calls, budget_s = int(args[2]), float(args[3])
        target = proxy
        for part in method.split("."):
            target = getattr(target, part)
        return {"latencies": timed(lambda: target(*params), max_calls, budget_s)}
    if action == "start-all":
        proxy.supervisor.getState()  # the connection is open before the clock starts
        sent_at = time.monotonic()
        results = proxy.supervisor.startAllProcesses(False)
        return {"sent_at": sent_at, "answered_at": time.monotonic(), "started": len(results)}
    raise SystemExit(f"unknown supervisord action {action!r}")


def circus(endpoint: str, action: str, args: list[str]) -> dict[str, Any]:
    client = circus_client(endpoint)
    try:
        if action == "time":
            command, max_calls, budget_s = json.loads(args[0]), int(args[1]), float(args[2])

            def call() -> None:
                answer = client.call(command)
                if answer.get("status") == "error":
                    raise RuntimeError(f"circus answered {answer!r}")

            return {"latencies": timed(call, max_calls, budget_s)}
        if action == "start":
            client.call({"command": "numwatchers", "properties": {}})
            sent_at = time.monotonic()
            for name in args:
                # circus runs one start at a time: each call waits for its watcher to start.
                properties = {"name": name, "match": "simple", "waiting": True}
                answer = client.call({"command": "start", "properties": properties})
                if answer.get("status") != "ok":
                    raise RuntimeError(f"circus start {name}: {answer!r}")
            return {"sent_at": sent_at, "answered_at": time.monotonic(), "started": len(args)}
        raise SystemExit(f"unknown circus action {action!r}")
    finally:
        client.stop()


def main() -> None:
    kind, address, action, *args = sys.argv[1:]
    handler: Callable[[str, str, list[str]], dict[str, Any]] = {
        "supervisord": supervisord,
        "circus": circus,
    }[kind]
    print(json.dumps(handler(address, action, args)))


if __name__ == "__main__":
    main()
