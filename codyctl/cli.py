"""The ``codyctl`` command line: one small function per command over shared helpers.

Exit status (docs/codyctl.md has the table): 0 success, 1 the daemon answered with an error,
2 usage error (a bad flag value too, even one the daemon refused), 3 the daemon cannot be
reached, 4 a waited-for run ended failed or cancelled, 5 ``wait --for`` expired,
130 interrupted. With ``--json`` every error is also one JSON object on stdout.
"""

from __future__ import annotations

import functools
import sys
import time
from collections.abc import Callable
from typing import Any, TypeVar

import click

import codyd
from codyctl import render
from codyctl.client import DEFAULT_TIMEOUT_S, ConnectError, DeadlineExceeded
from codyctl.follow import (
    EventCursor,
    Item,
    ItemHandler,
    LogCursor,
    Settings,
    present,
    run_stream,
)
from codyd.errors import CodydError, InvalidParams, InvalidState, NotFound
from codyd.model.state import TERMINAL, TERMINAL_EVENTS, State
from codyd.protocol import AGENTS, MAX_LIST_LIMIT

EXIT_DAEMON_ERROR = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3
EXIT_RUN_UNSUCCESSFUL = 4
EXIT_WAIT_TIMEOUT = 5
EXIT_INTERRUPTED = 130

STATES = tuple(state.value for state in State)
RECENT_EVENTS = 20
# codyd.spec.DEFAULT_STOP_FILE, repeated to keep codyd.spec out of codyctl's start-up
# (tests/test_codyctl_unit.py checks that they agree).
DEFAULT_STOP_FILE = ".cody-harness/current-epic/.stop"
T = TypeVar("T")
CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"]}


class Failure(Exception):
    """An error codyctl itself reports, with its exit status and a code for ``--json``."""

    def __init__(
        self, status: int, code: str, message: str, data: dict[str, Any] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.data = data or {}


class FlagError(click.UsageError):
    """A flag's value is wrong (the daemon may be the one that said so): exit 2."""

    def __init__(self, message: str, data: dict[str, Any]) -> None:
        super().__init__(message)
        self.data = data


class Globals:
    """The global options, which may be given before or after the command."""

    def __init__(self) -> None:
        self.socket: str | None = None
        self.json = False
        self.timeout: float | None = None

    def settings(self) -> Settings:
        return Settings(self.socket, self.json, self.timeout)


def remember(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    if value is not None and value is not False and param.name is not None:
        setattr(ctx.find_object(Globals), param.name, value)
    return value


positive_seconds = click.FloatRange(min=0, min_open=True)
GLOBAL_OPTIONS = (
    click.option(
        "--socket",
        metavar="PATH",
        expose_value=False,
        callback=remember,
        help="Daemon socket [default: $CODYD_SOCKET, else codyd's default path].",
    ),
    click.option(
        "--json",
        is_flag=True,
        expose_value=False,
        callback=remember,
        help="Print JSON only: results and errors as one object, streams one per line.",
    ),
    click.option(
        "--timeout",
        type=positive_seconds,
        metavar="S",
        expose_value=False,
        callback=remember,
        help=f"Seconds to wait for the daemon to answer [default: {DEFAULT_TIMEOUT_S:g}]; "
        "when following, how long to keep reconnecting [default: forever].",
    ),
)


def _global_params() -> list[click.Parameter]:
    def placeholder() -> None:
        pass

    for option in GLOBAL_OPTIONS:
        option(placeholder)
    params: list[click.Parameter] = placeholder.__click_params__  # type: ignore[attr-defined]
    return params


# Made once and shared by every command: a parameter holds no parsing state.
GLOBAL_PARAMS = _global_params()


def with_global_options(function: Callable[..., Any]) -> Callable[..., Any]:
    """Add the global options, listed after the command's own in its help."""
    own = getattr(function, "__click_params__", [])
    function.__click_params__ = [*GLOBAL_PARAMS, *own]  # type: ignore[attr-defined]
    return function


def write_line(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def show(settings: Settings, value: Any, human: Callable[[Any], str]) -> None:
    """Print one result: as a JSON object with ``--json``, else as ``human`` renders it."""
    write_line(render.to_json(value) if settings.json else human(value))


def key_values(
    ctx: click.Context, param: click.Parameter, values: tuple[str, ...]
) -> dict[str, str]:
    """Click callback turning repeated ``K=V`` options into a map."""
    pairs = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"expected K=V, got {item!r}", ctx=ctx, param=param)
        pairs[key] = value
    return pairs


def event_printer(settings: Settings, all_runs: bool) -> ItemHandler:
    if settings.json:
        return lambda event: write_line(render.to_json(event))
    return lambda event: write_line(render.event_line(event, all_runs))


def chunk_writer(settings: Settings) -> ItemHandler:
    if settings.json:
        return lambda chunk: write_line(render.chunk_json(chunk))

    def write_raw(chunk: Item) -> None:
        sys.stdout.buffer.write(chunk.get("data", b""))
        sys.stdout.buffer.flush()

    return write_raw


def on_run(settings: Settings, handle: str, action: Callable[[str], T]) -> T:
    """Do ``action`` with the run ``handle`` names: as an exact id first, else resolved.

    A handle that is not an exact id makes ``action`` fail ``not_found`` before it has done
    anything; only then are the runs searched for a unique id prefix or name.
    """
    try:
        return action(handle)
    except (NotFound, InvalidParams) as exc:
        from codyctl import handles

        if not handles.not_an_id(exc):
            raise
        with settings.open() as client:
            run_id = handles.run_id(client, handle)
        if run_id == handle:
            raise
        return action(run_id)


def recent_start(settings: Settings, run_id: str | None) -> int | None:
    """The cursor that makes a tail begin with the last ``RECENT_EVENTS`` events."""
    with settings.open() as client:
        if run_id is not None:
            last_seq = client.call("run.status", {"run_id": run_id}).get("last_seq")
        else:
            # A non-following stream with no cursor ends at once at the newest gid.
            for _event in client.stream("run.events", {"follow": False}):
                pass
            last_seq = (client.last_stream_result or {}).get("last_seq")
    return max(0, last_seq - RECENT_EVENTS) if isinstance(last_seq, int) else None


def tail_events(
    settings: Settings, run_id: str | None, after: int | None, types: list[str], follow: bool
) -> None:
    printer = event_printer(settings, run_id is None)
    if after is None and types:
        # The window of RECENT_EVENTS applies after the filter: the last 20 of those types.
        from collections import deque

        cursor = EventCursor(run_id, types, 0)
        recent: deque[Item] = deque(maxlen=RECENT_EVENTS)
        run_stream(settings, cursor, recent.append, follow=False)
        for event in recent:
            printer(event)
        if follow:
            run_stream(settings, cursor, printer, follow=True)
        return
    if after is None:
        after = recent_start(settings, run_id)
    run_stream(settings, EventCursor(run_id, types, after), printer, follow=follow)


def wait_for_end(settings: Settings, run_id: str, deadline: float | None) -> dict[str, Any]:
    """Block until the run is terminal; returns its final snapshot."""
    with settings.open(deadline=deadline) as client:
        snapshot: dict[str, Any] = client.call("run.status", {"run_id": run_id})
    if snapshot.get("state") in TERMINAL:
        return snapshot
    cursor = EventCursor(run_id, list(TERMINAL_EVENTS), snapshot.get("last_seq", 0))
    run_stream(settings, cursor, lambda _event: None, follow=True, deadline=deadline)
    with settings.open(deadline=deadline) as client:
        final: dict[str, Any] = client.call("run.status", {"run_id": run_id})
        return final


def report_end(settings: Settings, run_id: str, deadline: float | None = None) -> None:
    """Wait for the run, print its final state, and exit 4 unless it completed."""
    try:
        snapshot = wait_for_end(settings, run_id, deadline)
    except DeadlineExceeded:
        raise Failure(
            EXIT_WAIT_TIMEOUT, "wait_timeout", f"timed out waiting for run {run_id} to end"
        ) from None
    show(settings, snapshot, render.state_line)
    if snapshot.get("state") != "completed":
        raise click.exceptions.Exit(EXIT_RUN_UNSUCCESSFUL)


def control(settings: Settings, method: str, handle: str, params: dict[str, Any]) -> None:
    def act(run_id: str) -> Any:
        return settings.call(method, present({"run_id": run_id, **params}))

    show(settings, on_run(settings, handle, act), render.state_line)


# --- commands ----------------------------------------------------------------------------------


def command(
    name: str | None = None, **options: Any
) -> Callable[[Callable[..., Any]], click.Command]:
    """A codyctl command: it takes the global options too and gets the settings first."""

    def decorate(function: Callable[..., Any]) -> click.Command:
        @functools.wraps(function)
        def invoke(**params: Any) -> Any:
            globals_ = click.get_current_context().find_object(Globals) or Globals()
            return function(globals_.settings(), **params)

        return cli.command(name, **options)(with_global_options(invoke))

    return decorate


@click.group(context_settings=CONTEXT_SETTINGS)
@with_global_options
@click.version_option(
    codyd.__version__, "--version", prog_name="codyctl", message="%(prog)s %(version)s"
)
def cli() -> None:
    """Control codyd, the supervisor of autonomous coding agent runs.

    RUN is a run id, a unique prefix of one (8+ characters) or a unique run name.
    The global options may come before or after the command.
    """


@command()
@click.argument("workspace")
@click.argument("argv", nargs=-1, metavar="[-- ARGV...]")
@click.option("--agent", type=click.Choice(AGENTS), help="Agent runtime [default: command].")
@click.option(
    "--prompt", metavar="T", help="Prompt text; - reads stdin (else --prompt-file, else stdin)."
)
@click.option("--prompt-file", metavar="F", help="Prompt file, re-read every turn.")
@click.option(
    "--context-file", "context_files", multiple=True, metavar="F", help="Appended every turn."
)
@click.option(
    "--max-turns", type=int, metavar="N", help="Turns before the run completes [default: 100]."
)
@click.option(
    "--stop-file",
    metavar="F",
    help="Workspace-relative file whose appearance after a turn completes the run "
    f"[default: {DEFAULT_STOP_FILE}]; '' for none.",
)
@click.option("--no-stop-file", is_flag=True, help="No stop file (same as --stop-file '').")
@click.option("--complete-pattern", metavar="RE", help="Output regex that completes the run.")
@click.option("--model", metavar="M", help="Model passed to the agent.")
@click.option("--name", metavar="N", help="Human label; names the run wherever RUN is taken.")
@click.option("--run-id", metavar="ID", help="Client-chosen run id [default: generated].")
@click.option("--env", multiple=True, callback=key_values, metavar="K=V", help="Agent env.")
@click.option(
    "--label", "labels", multiple=True, callback=key_values, metavar="K=V", help="Run label."
)
@click.option(
    "--watch-log", "watch_logs", multiple=True, metavar="F", help="Log file watched for growth."
)
@click.option(
    "--stall-timeout", type=positive_seconds, metavar="S", help="Max silent turn time [600]."
)
@click.option("--turn-timeout", type=positive_seconds, metavar="S", help="Max turn time [3600].")
@click.option("--follow", is_flag=True, help="Then tail the run's events.")
@click.option("--wait", "wait_end", is_flag=True, help="Then wait for the run to end.")
def start(
    settings: Settings,
    /,
    workspace: str,
    argv: tuple[str, ...],
    follow: bool,
    wait_end: bool,
    **options: Any,
) -> None:
    """Start a run in WORKSPACE and print its id.

    ARGV after -- is the agent's command (implying --agent command). Relative paths are
    relative to the current directory when they exist there, else to the workspace.
    """
    from codyctl import startspec

    if follow and wait_end:
        raise click.UsageError("give --follow or --wait, not both")
    spec = startspec.run_spec(workspace, argv, options)
    try:
        snapshot = settings.call("run.start", spec)
    except InvalidParams as exc:
        message = startspec.flag_message(exc.field, exc.message)
        if message is None:
            raise
        data = {**exc.data, "flag": startspec.flag_for(exc.field)}
        raise FlagError(message, data) from None
    show(settings, snapshot, lambda run: str(run["run_id"]))
    if follow:
        tail_events(settings, snapshot["run_id"], 0, [], follow=True)
    elif wait_end:
        report_end(settings, snapshot["run_id"])


@command(short_help="Show a run: state, what ends it, its last turn.")
@click.argument("run", metavar="RUN")
def status(settings: Settings, run: str) -> None:
    """Show a run: state, what ends it, its last turn, tests and stderr line."""
    with settings.open() as client:
        if not settings.json:
            from codyctl import status as report

            snapshot, lines = report.snapshot_and_extras(client, run)
            write_line(render.snapshot_text(snapshot, lines))
            return
        try:
            snapshot = client.call("run.status", {"run_id": run})
        except (NotFound, InvalidParams):
            from codyctl import handles

            snapshot = handles.resolve(client, run)
    write_line(render.to_json(snapshot))


@command("list")
@click.option("--state", "states", multiple=True, type=click.Choice(STATES), help="Only these.")
@click.option("--label", "labels", multiple=True, callback=key_values, metavar="K=V")
@click.option("--limit", type=click.IntRange(min=1), default=100, show_default=True)
def list_runs(
    settings: Settings, states: tuple[str, ...], labels: dict[str, str], limit: int
) -> None:
    """List runs, newest first."""
    filters = present({"states": list(states), "labels": labels})
    runs: list[dict[str, Any]] = []
    cursor = None
    with settings.open() as client:
        while len(runs) < limit:
            page_size = min(limit - len(runs), MAX_LIST_LIMIT)
            page = client.call(
                "run.list", {**filters, **present({"cursor": cursor}), "limit": page_size}
            )
            runs.extend(page.get("runs", []))
            cursor = page.get("cursor")
            if not cursor:
                break
    show(
        settings,
        {"runs": runs[:limit], "cursor": cursor},
        lambda page: render.run_table(page["runs"]),
    )


@command()
@click.argument("run", metavar="RUN")
@click.option("--now", is_flag=True, help="Stop the turn in progress instead of letting it finish.")
@click.option("--reason", metavar="R", help="Recorded in the run's events.")
def pause(settings: Settings, run: str, now: bool, reason: str | None) -> None:
    """Pause a run (after its current turn, or --now)."""
    control(settings, "run.pause", run, {"now": now or None, "reason": reason})


@command()
@click.argument("run", metavar="RUN")
def resume(settings: Settings, run: str) -> None:
    """Resume a paused run."""
    control(settings, "run.resume", run, {})


@command()
@click.argument("run", metavar="RUN")
@click.option("--reason", metavar="R", help="Recorded in the run's events.")
def cancel(settings: Settings, run: str, reason: str | None) -> None:
    """Cancel a run."""
    control(settings, "run.cancel", run, {"reason": reason})


@command()
@click.argument("run", metavar="RUN")
@click.option("--reason", metavar="R", help="Recorded in the run's events.")
def retry(settings: Settings, run: str, reason: str | None) -> None:
    """Drive a failed run again, resuming its session."""
    control(settings, "run.retry", run, {"reason": reason})


def or_none(inner: click.ParamType[Any]) -> click.ParamType[Any]:
    from codyctl.update import OrNone

    return OrNone(inner)


@command(short_help="Change a live or failed run's limits, labels or name.")
@click.argument("run", metavar="RUN")
@click.option("--max-turns", type=int, metavar="N", help="Turns before the run completes.")
@click.option("--budget-usd", type=or_none(click.FLOAT), metavar="X", help="budget.max_cost_usd.")
@click.option("--budget-tokens", type=or_none(click.INT), metavar="N", help="budget.max_tokens.")
@click.option(
    "--budget-duration", type=or_none(click.FLOAT), metavar="S", help="budget.max_duration_s."
)
@click.option("--stall-timeout", type=float, metavar="S", help="Max silent turn time.")
@click.option("--turn-timeout", type=float, metavar="S", help="Max turn time.")
@click.option("--sigkill-delay", type=float, metavar="S", help="SIGTERM to SIGKILL delay.")
@click.option("--max-failures", type=int, metavar="N", help="Failed turns in a row that fail it.")
@click.option("--retry-backoff", type=float, metavar="S", help="Delay after a failed turn.")
@click.option(
    "--stagnation-turns", type=or_none(click.INT), metavar="N", help="Turns without progress."
)
@click.option(
    "--session-max-turns", type=or_none(click.INT), metavar="N", help="Turns per session."
)
@click.option("--name", metavar="N", help="Human label.")
@click.option(
    "--label",
    "labels",
    multiple=True,
    callback=key_values,
    metavar="K=V",
    help="Set a label (repeatable); the run's other labels stay.",
)
def update(settings: Settings, run: str, labels: dict[str, str], **options: Any) -> None:
    """Change a run's limits from its next check on; budgets take X or none.

    A lowered --turn-timeout or --stall-timeout applies to the turn in progress.
    """
    from codyctl import update as changes

    if not labels and all(value is None for value in options.values()):
        raise click.UsageError("nothing to change: give at least one flag (see --help)")

    def act(run_id: str) -> tuple[dict[str, Any], dict[str, Any]]:
        with settings.open() as client:
            before: dict[str, Any] = client.call("run.status", {"run_id": run_id})
            params = changes.update_params(options, labels, before.get("labels") or {})
            after: dict[str, Any] = client.call("run.update", {"run_id": run_id, **params})
        return before, after

    before, after = on_run(settings, run, act)
    show(settings, after, lambda snapshot: changes.change_lines(snapshot, before))


@command(short_help="Queue a message for the next turn's prompt.")
@click.argument("run", metavar="RUN")
@click.argument("text", metavar="TEXT")
def say(settings: Settings, run: str, text: str) -> None:
    """Add TEXT (- reads stdin) to the next turn's prompt, under "Message from the operator"."""
    from codyctl.update import say_text

    message = say_text(text)

    def act(run_id: str) -> dict[str, Any]:
        answer = settings.call("run.say", {"run_id": run_id, "text": message})
        return {"run_id": run_id, "queued": answer.get("queued")}

    show(
        settings,
        on_run(settings, run, act),
        lambda result: f"{result['run_id']}: {result['queued']} message(s) for the next turn",
    )


@command()
@click.argument("run", metavar="RUN")
def forget(settings: Settings, run: str) -> None:
    """Delete a finished run: its events, snapshot and files."""

    def act(run_id: str) -> Any:
        settings.call("run.forget", {"run_id": run_id})
        return {"run_id": run_id, "forgotten": True}

    show(settings, on_run(settings, run, act), lambda result: f"{result['run_id']} forgotten")


DURATION_UNITS = {"d": 86400, "h": 3600, "m": 60, "s": 1}
DURATION_FORMS = "a whole number with d, h, m or s (7d, 12h, 30m, 90s)"


def parse_duration(ctx: click.Context, param: click.Parameter, value: str) -> float:
    """Seconds in a DURATION such as ``7d``: a whole number and one unit."""
    number, unit = value[:-1], value[-1:]
    if unit not in DURATION_UNITS or not number.isdigit():
        raise click.BadParameter(f"{value!r} is not a duration; expected {DURATION_FORMS}")
    return float(int(number) * DURATION_UNITS[unit])


TERMINAL_STATES = tuple(state.value for state in State if state in TERMINAL)


@command()
@click.option(
    "--older-than",
    "older_than",
    default="7d",
    show_default=True,
    callback=parse_duration,
    metavar="DURATION",
    help=f"Only runs finished at least this long ago: {DURATION_FORMS}.",
)
@click.option(
    "--state",
    "states",
    multiple=True,
    type=click.Choice(TERMINAL_STATES),
    help="Only runs that ended in this state (repeatable; default: every terminal state).",
)
@click.option("--dry-run", is_flag=True, help="List what would be forgotten; forget nothing.")
def prune(settings: Settings, older_than: float, states: tuple[str, ...], dry_run: bool) -> None:
    """Forget the finished runs that ended before a cutoff; print each one."""
    cutoff = time.time() - older_than
    chosen: list[dict[str, Any]] = []
    with settings.open() as client:
        cursor = None
        while True:
            page = client.call(
                "run.list",
                {"states": list(states or TERMINAL_STATES), "limit": MAX_LIST_LIMIT}
                | present({"cursor": cursor}),
            )
            chosen += [r for r in page.get("runs", []) if (r.get("finished_at") or 0) <= cutoff]
            cursor = page.get("cursor")
            if not cursor:
                break
        for run in chosen:
            run["forgotten"] = not dry_run
            if not dry_run:
                try:
                    client.call("run.forget", {"run_id": run["run_id"]})
                except NotFound:
                    pass  # forgotten meanwhile by someone else: already what we wanted
                except InvalidState as exc:
                    # Retried (or not yet wound down) since the listing: it is left alone.
                    run["forgotten"], run["skipped"] = False, exc.message
            if not settings.json:
                verb = "would forget" if dry_run else "forgot"
                ended = render.local_time(run.get("finished_at"))
                if "skipped" in run:
                    write_line(f"kept {run['run_id']}: {run['skipped']}")
                else:
                    write_line(f"{verb} {run['run_id']} {run['state']} (ended {ended})")
    if settings.json:
        write_line(render.to_json(chosen))


def known_types(
    ctx: click.Context, param: click.Parameter, values: tuple[str, ...]
) -> tuple[str, ...]:
    if not values:
        return values
    from codyd.model.events import EVENT_TYPES

    unknown = [value for value in values if value not in EVENT_TYPES]
    if unknown:
        raise click.BadParameter(
            f"unknown event type {unknown[0]!r}; known: {', '.join(sorted(EVENT_TYPES))}",
            ctx=ctx,
            param=param,
        )
    return values


@command()
@click.argument("run", metavar="[RUN]", required=False)
@click.option("-f", "--follow", is_flag=True, help="Keep printing new events.")
@click.option("--after", type=click.IntRange(min=0), metavar="SEQ", help="Start after this seq.")
@click.option(
    "--type",
    "types",
    multiple=True,
    metavar="T",
    callback=known_types,
    help="Only events of this type (repeatable); without --after, the last 20 of them.",
)
def tail(
    settings: Settings, run: str | None, follow: bool, after: int | None, types: tuple[str, ...]
) -> None:
    """Print the events of RUN, or of all runs (then SEQ is a gid).

    Without --after: the last 20 events, then (with -f) new ones.
    """
    if run is None:
        tail_events(settings, None, after, list(types), follow)
        return
    on_run(settings, run, lambda run_id: tail_events(settings, run_id, after, list(types), follow))


@command()
@click.argument("run", metavar="RUN")
@click.option("--turn", type=click.IntRange(min=1), metavar="N", help="[default: the newest]")
@click.option("--stderr", "from_stderr", is_flag=True, help="Print stderr instead of stdout.")
@click.option(
    "-f",
    "--follow",
    is_flag=True,
    help="Keep printing: with --turn until that turn ends, else turn after turn until the "
    "run ends.",
)
def logs(settings: Settings, run: str, turn: int | None, from_stderr: bool, follow: bool) -> None:
    """Print the raw output of a turn."""
    stream = "stderr" if from_stderr else "stdout"

    def print_logs(run_id: str) -> None:
        if follow:
            from codyctl import logfollow

            logfollow.follow(settings, run_id, stream, turn, chunk_writer(settings))
            return
        cursor = LogCursor(run_id, stream, turn)
        run_stream(settings, cursor, chunk_writer(settings), follow=follow)

    on_run(settings, run, print_logs)


@command(short_help="Block until RUN ends; exit 0 completed, 4 failed or cancelled.")
@click.argument("run", metavar="RUN")
@click.option(
    "--for",
    "--deadline",
    "for_s",
    type=positive_seconds,
    metavar="S",
    help="Give up after S seconds and exit 5 [default: --timeout if given, else never].",
)
def wait(settings: Settings, run: str, for_s: float | None) -> None:
    """Block until RUN ends; exit 0 if it completed, 4 if it failed or was cancelled."""
    # `wait RUN --timeout S`: without --for, the global timeout bounds the wait too.
    limit = for_s if for_s is not None else settings.timeout
    deadline = None if limit is None else time.monotonic() + limit
    on_run(settings, run, lambda run_id: report_end(settings, run_id, deadline))


@command()
def info(settings: Settings) -> None:
    """Show the daemon's state."""
    show(settings, settings.call("daemon.info"), render.mapping_text)


@command()
def ping(settings: Settings) -> None:
    """Measure a round trip to the daemon."""
    with settings.open() as client:
        sent_at = time.perf_counter()
        result = client.call("daemon.ping")
        round_trip_ms = (time.perf_counter() - sent_at) * 1000
    show(
        settings,
        {**result, "round_trip_ms": round(round_trip_ms, 3)},
        lambda answer: f"pong in {answer['round_trip_ms']:.2f} ms",
    )


@command()
def shutdown(settings: Settings) -> None:
    """Ask the daemon to shut down gracefully."""
    show(settings, settings.call("daemon.shutdown"), lambda _result: "codyd is shutting down")


@command()
@click.option(
    "--interval",
    type=click.FloatRange(min=0.1),
    default=1.0,
    show_default=True,
    help="Seconds between refreshes.",
)
@click.option("--limit", type=click.IntRange(1, 1000), default=50, show_default=True)
@click.option("--once", is_flag=True, help="Print one table and exit.")
def watch(settings: Settings, interval: float, limit: int, once: bool) -> None:
    """A live, refreshing table of runs; Ctrl-C to leave. Reconnects when codyd restarts."""
    from codyctl import watch as view

    try:
        view.loop(settings, interval, limit, once)
    except KeyboardInterrupt:
        if not settings.json:
            sys.stdout.write("\n")
        sys.exit(0)


@command(short_help="Print the shell completion script for bash, zsh or fish.")
@click.argument("shell", type=click.Choice(["bash", "zsh", "fish"]))
def completion(settings: Settings, shell: str) -> None:
    """Print the shell completion script, e.g. eval "$(codyctl completion bash)"."""
    from click.shell_completion import get_completion_class

    complete = get_completion_class(shell)
    assert complete is not None
    sys.stdout.write(complete(cli, {}, "codyctl", "_CODYCTL_COMPLETE").source() + "\n")


@command(short_help="Print codyctl's man page (roff).")
def man(settings: Settings) -> None:
    """Print codyctl's man page (roff), e.g. codyctl man | man -l -."""
    from codyd import manpage

    page = manpage.Page(
        prog="codyctl",
        version=codyd.__version__,
        exit_statuses=(
            ("0", "success"),
            ("1", "the daemon answered with an error"),
            ("2", "usage error, including a flag value the daemon refused"),
            ("3", "the daemon cannot be reached"),
            ("4", "a waited-for run ended failed or cancelled"),
            ("5", "wait --for (or --timeout) expired"),
            ("130", "interrupted"),
        ),
        environment=(("CODYD_SOCKET", "The daemon socket when --socket is not given."),),
        see_also="codyd(1); docs/codyctl.md in the codyd source.",
        global_options=frozenset({"socket", "json", "timeout"}),
    )
    sys.stdout.write(manpage.render(cli, page))


# --- errors ------------------------------------------------------------------------------------


def json_requested(args: list[str]) -> bool:
    """Whether ``--json`` is among the options (known before parsing, for parse errors)."""
    options = args[: args.index("--")] if "--" in args else args
    return "--json" in options


def report(
    as_json: bool,
    status: int,
    code: str,
    message: str,
    retryable: bool,
    data: dict[str, Any],
    prefix: str = "",
) -> int:
    """The message on stderr (after ``prefix``), and with ``--json`` the error object too."""
    click.echo(f"codyctl: {prefix}{message}", err=True)
    if as_json:
        error = {"code": code, "message": message, "retryable": retryable, "data": data}
        write_line(render.to_json({"error": error}))
    return status


def usage_status(exc: click.ClickException, as_json: bool) -> int:
    if not as_json:
        exc.show()
        return exc.exit_code
    code = "usage" if isinstance(exc, click.UsageError) else "error"
    data = exc.data if isinstance(exc, FlagError) else {}
    if isinstance(exc, FlagError):
        code = "invalid_params"
    return report(True, exc.exit_code, code, exc.format_message(), False, data)


def main() -> None:
    args = sys.argv[1:]
    as_json = json_requested(args)
    try:
        status = cli.main(args, "codyctl", standalone_mode=False, obj=Globals())
    except click.ClickException as exc:
        status = usage_status(exc, as_json)
    except InvalidParams as exc:
        # codyctl sends well-formed requests: a refused parameter is a value the user gave.
        from codyctl.startspec import flag_for, flag_message

        flag = "RUN" if exc.field == "run_id" else flag_for(exc.field)
        message = (
            exc.message.replace("run_id:", "RUN:", 1)
            if flag == "RUN"
            else flag_message(exc.field, exc.message) or exc.message
        )
        data = {**exc.data, "flag": flag}
        status = report(as_json, EXIT_USAGE, exc.code, message, False, data)
    except CodydError as exc:
        status = report(
            as_json,
            EXIT_DAEMON_ERROR,
            exc.code,
            exc.message,
            exc.retryable,
            exc.data,
            prefix=f"{exc.code}: ",
        )
    except ConnectError as exc:
        data = {"socket": exc.socket_path}
        status = report(as_json, EXIT_UNREACHABLE, "unreachable", str(exc), True, data)
    except Failure as exc:
        status = report(as_json, exc.status, exc.code, exc.message, False, exc.data)
    except (KeyboardInterrupt, click.exceptions.Abort):
        status = EXIT_INTERRUPTED
    sys.exit(status if isinstance(status, int) else 0)
