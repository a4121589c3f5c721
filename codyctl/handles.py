"""Run handles: what a user may type where codyctl takes a RUN.

An exact run id wins; otherwise a unique id prefix of at least ``MIN_PREFIX`` characters or a
unique run ``name`` names a run. Resolution is client-side: ``run.status`` for the exact id,
then pages of ``run.list``.
"""

from __future__ import annotations

from typing import Any

import click

from codyctl.client import Client
from codyd.errors import InvalidParams, NotFound, UnknownMethod
from codyd.protocol import MAX_LIST_LIMIT

MIN_PREFIX = 8
SHOWN_CANDIDATES = 10


def resolve(client: Client, handle: str) -> dict[str, Any]:
    """The snapshot (or list summary) of the one run ``handle`` names."""
    try:
        snapshot: dict[str, Any] = client.call("run.status", {"run_id": handle})
        return snapshot
    except NotFound as exc:
        missing = exc
    except InvalidParams as exc:
        # Not even the shape of an id ("my nightly run"): it can still be a name.
        if exc.field != "run_id":
            raise
        missing = NotFound(f"no run has the id or name {handle!r}", run_id=handle)
    try:
        matches = [run for run in all_runs(client) if matches_handle(run, handle)]
    except UnknownMethod:
        raise missing from None
    if len(matches) == 1:
        found: dict[str, Any] = client.call("run.status", {"run_id": matches[0]["run_id"]})
        return found
    if not matches:
        raise missing
    listed = ", ".join(
        f"{run['run_id']}" + (f" ({run['name']})" if run.get("name") else "")
        for run in matches[:SHOWN_CANDIDATES]
    )
    more = f" and {len(matches) - SHOWN_CANDIDATES} more" if len(matches) > SHOWN_CANDIDATES else ""
    raise click.UsageError(
        f"{handle!r} names {len(matches)} runs: {listed}{more}; give more of the id"
    )


def matches_handle(run: dict[str, Any], handle: str) -> bool:
    if run.get("name") == handle:
        return True
    return len(handle) >= MIN_PREFIX and str(run.get("run_id", "")).startswith(handle)


def all_runs(client: Client) -> list[dict[str, Any]]:
    runs: list[dict[str, Any]] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": MAX_LIST_LIMIT}
        if cursor:
            params["cursor"] = cursor
        page = client.call("run.list", params)
        runs.extend(page.get("runs", []))
        cursor = page.get("cursor")
        if not cursor:
            return runs


def run_id(client: Client, handle: str) -> str:
    return str(resolve(client, handle)["run_id"])


def not_an_id(exc: Exception) -> bool:
    """Whether ``exc`` says that a handle is no run's id (so it may be a prefix or a name)."""
    return isinstance(exc, NotFound) or (isinstance(exc, InvalidParams) and exc.field == "run_id")
