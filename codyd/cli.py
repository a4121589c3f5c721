"""The ``codyd`` command: ``serve``, ``check-config``, ``--version``.

How to run it: docs/operations.md §1; its configuration: docs/configuration.md.
"""

from __future__ import annotations

import gc
import json
import sys
from pathlib import Path
from typing import Any

import click

from codyd import __version__

# Younger collections between two full ones (CPython's default is 10).
FULL_COLLECTION_THRESHOLD = 100


def _load(config_file: Path | None, flags: dict[str, Any]) -> Any:
    from codyd.config import ConfigError, load_config

    try:
        return load_config(config_file, flags=flags)
    except ConfigError as exc:
        if len(exc.problems) == 1:
            click.echo(f"codyd: configuration error: {exc}", err=True)
        else:
            click.echo(f"codyd: configuration errors ({len(exc.problems)}):", err=True)
            for problem in exc.problems:
                click.echo(f"  {problem}", err=True)
        sys.exit(2)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="codyd", message="%(prog)s %(version)s")
def main() -> None:
    """The supervisor daemon for autonomous coding agents.

    codyd drives agent CLIs (OpenAI Codex CLI, Claude Code, or any command) turn after
    turn in their workspaces, records every event in its store (and, when configured,
    in Redis Streams), and answers codyctl and other clients on its Unix socket.
    """


@main.command()
@click.option("--config", "config_file", type=click.Path(path_type=Path), help="TOML config file.")
@click.option("--socket", type=click.Path(path_type=Path), help="Unix socket path.")
@click.option("--state-dir", type=click.Path(path_type=Path), help="State directory.")
@click.option("--redis-url", help="Redis URL for the mirror (optional).")
@click.option("--node", help="This daemon's node name.")
@click.option("--log-format", type=click.Choice(["json", "console"]))
@click.option(
    "--log-level", type=click.Choice(["debug", "info", "warning", "error"], case_sensitive=False)
)
def serve(config_file: Path | None, **flags: Any) -> None:
    """Run the daemon in the foreground."""
    config = _load(config_file, flags)

    import trio

    from codyd.daemon import lock_state_dir
    from codyd.daemon import serve as serve_daemon
    from codyd.logging import configure
    from codyd.server import refuse_if_listening

    configure(config.log_format, config.log_level)
    import structlog

    log = structlog.get_logger("codyd")
    # One key per setting: readable in the console renderer, queryable in the JSON one.
    log.info("starting", version=__version__, **config.summary())
    tune_collector()
    raise_open_files_limit()
    try:
        refuse_if_listening(config.socket)
        with lock_state_dir(config.state_dir):
            trio.run(serve_daemon, config)
    except BaseException as exc:
        known = _startup_failure(exc)
        if known is None:
            raise
        log.error(str(known))
        click.echo(f"codyd: {known}", err=True)
        sys.exit(1)


def raise_open_files_limit() -> None:
    """Lift the soft limit on open files to the hard one: each live turn holds several."""
    import contextlib
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        with contextlib.suppress(ValueError, OSError):  # else keep the limit we were given
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def tune_collector() -> None:
    """Keep full garbage collections rare and short: each one stalls every client.

    A busy daemon promotes many objects that die soon after (held streams,
    connections) to the oldest generation; with the default threshold a full
    collection ran every ~2 s under load and paused the event loop 25–50 ms with
    200 runs. Now it needs ten times as many younger collections, and what start-up
    made (modules, configuration), which lives as long as the process, is frozen
    out of the scans.
    """
    young, middle, _ = gc.get_threshold()
    gc.set_threshold(young, middle, FULL_COLLECTION_THRESHOLD)
    gc.freeze()


def _startup_failure(exc: BaseException) -> Exception | None:
    """The start-up failure inside ``exc`` (trio wraps errors of its tasks in groups)."""
    from codyd.errors import StartupFailure

    if isinstance(exc, StartupFailure):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = _startup_failure(inner)
            if found is not None:
                return found
    return None


@main.command("check-config")
@click.option("--config", "config_file", type=click.Path(path_type=Path), help="TOML config file.")
def check_config(config_file: Path | None) -> None:
    """Validate the configuration and print it as JSON; say which agent CLIs are installed."""
    config = _load(config_file, {})
    click.echo(json.dumps(config.summary(), indent=2, default=str))
    from codyd.agents.version import describe_agents

    for line in describe_agents(config.agents):
        click.echo(f"codyd: {line}", err=True)


@main.command()
def man() -> None:
    """Print codyd's man page (roff), e.g. codyd man | man -l -."""
    from codyd import manpage

    page = manpage.Page(
        prog="codyd",
        version=__version__,
        exit_statuses=(
            ("0", "the daemon stopped gracefully (SIGTERM, SIGINT or daemon.shutdown)"),
            ("1", "it could not start (socket or state directory busy, store unusable)"),
            ("2", "invalid configuration or usage"),
        ),
        environment=(
            ("CODYD_CONFIG", "The TOML configuration file when --config is not given."),
            (
                "CODYD_<KEY>",
                "Any configuration key, nested keys joined by __ "
                "(CODYD_AGENTS__CODEX__BIN); over the file, under the flags.",
            ),
            ("RUNTIME_DIRECTORY, XDG_RUNTIME_DIR", "Where the socket goes by default."),
            ("STATE_DIRECTORY, XDG_STATE_HOME", "Where the state directory goes by default."),
        ),
        see_also="codyctl(1); docs/configuration.md and docs/operations.md in the codyd source.",
    )
    sys.stdout.write(manpage.render(main, page))
