"""All-runs SSE over HTTP through the hub: the same frames for every client, resumable."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator

from test_e2e_http import Http, http, http_factory, start_spec  # noqa: F401 - the fixtures

from conftest import wait_until

SSE = {"Accept": "text/event-stream"}


def frames_until_completed(lines: Iterator[str], run_id: str) -> list[tuple[str, str, str]]:
    """(id, event, data) of each frame up to the run's ``run_completed``; comments skipped."""
    found: list[tuple[str, str, str]] = []
    frame: list[str] = []
    for line in lines:
        if line.startswith(("id: ", "event: ", "data: ")):
            frame.append(line)
        if len(frame) == 3:
            found.append((frame[0], frame[1], frame[2]))
            frame = []
            event = json.loads(found[-1][2][6:])
            if event["type"] == "run_completed" and event["run_id"] == run_id:
                return found
    raise AssertionError(f"the stream ended before run {run_id} completed")


def test_streams_carry_the_same_frames_and_resume_inside_the_ring(http: Http) -> None:  # noqa: F811
    """A live client, one from an earlier cursor and one resuming mid-run see one stream."""
    with http.client() as client, client.stream("GET", "/api/v1/events", headers=SSE) as live:
        lines = live.iter_lines()
        assert next(lines) == "retry: 2000"
        run_id = client.post("/api/v1/runs", json=start_spec(http.daemon)).json()["run_id"]
        http.daemon.wait_state(run_id, "completed")
        seen = frames_until_completed(lines, run_id)
        ids = [int(frame[0][4:]) for frame in seen]
        assert ids == list(range(ids[0], ids[0] + len(ids))) and len(ids) > 4
        assert all(json.loads(data[6:])["gid"] == int(i[4:]) for i, _, data in seen)
        middle = len(seen) // 2
        url = f"/api/v1/events?after={ids[0] - 1}"
        with client.stream("GET", url, headers=SSE) as again:
            assert frames_until_completed(again.iter_lines(), run_id) == seen
        resume = {**SSE, "Last-Event-ID": str(ids[middle])}
        with client.stream("GET", "/api/v1/events", headers=resume) as resumed:
            assert frames_until_completed(resumed.iter_lines(), run_id) == seen[middle + 1 :]


def test_an_all_runs_cursor_before_the_retained_events_is_410(
    http_factory: Callable[..., Http],  # noqa: F811
) -> None:
    trimming = http_factory(env={"CODYD_EVENT_RETENTION__MAX_EVENTS_PER_RUN": "2"})
    with trimming.client() as client:
        run_id = client.post("/api/v1/runs", json=start_spec(trimming.daemon)).json()["run_id"]
        trimming.daemon.wait_state(run_id, "completed")
        url = f"/api/v1/runs/{run_id}/events"
        wait_until(lambda: client.get(url, params={"after": 0}).json()["events"][0]["seq"] > 2)
        trimmed = client.get("/api/v1/events", params={"after": 1}, headers=SSE)
        assert trimmed.status_code == 410
        error = trimmed.json()["error"]
        assert error["code"] == "trimmed" and error["data"]["oldest_seq"] > 2
