"""codyctl's man page, written in roff from the click definitions so that it cannot drift."""

from __future__ import annotations

import time

import click

EXIT_STATUSES = (
    ("0", "success"),
    ("1", "the daemon answered with an error"),
    ("2", "usage error, including a flag value the daemon refused"),
    ("3", "the daemon cannot be reached"),
    ("4", "a waited-for run ended failed or cancelled"),
    ("5", "wait --for (or --timeout) expired"),
    ("130", "interrupted"),
)


def escape(text: str) -> str:
    """Text safe in roff: backslashes and dashes escaped, each paragraph one filled line."""
    paragraphs = [" ".join(part.split()) for part in text.split("\n\n")]
    lines = []
    for paragraph in paragraphs:
        line = paragraph.replace("\\", "\\e").replace("-", "\\-")
        lines.append("\\&" + line if line.startswith((".", "'")) else line)
    return "\n.PP\n".join(line for line in lines if line)


def option_line(param: click.Parameter) -> tuple[str, str]:
    names = ", ".join(param.opts + param.secondary_opts)
    if isinstance(param, click.Option) and not param.is_flag:
        names += f" {param.metavar or param.type.name.upper()}"
    help_text = getattr(param, "help", None) or ""
    if isinstance(param, click.Option) and param.show_default and param.default is not None:
        help_text += f" [default: {param.default}]"
    return names, help_text


def command_section(ctx: click.Context, name: str, command: click.Command) -> list[str]:
    sub = click.Context(command, info_name=name, parent=ctx)
    usage = " ".join(command.collect_usage_pieces(sub))
    lines = [".SS " + escape(f"{name} {usage}"), escape(command.help or "")]
    for param in command.get_params(sub):
        if isinstance(param, click.Option) and param.name not in ("help", "socket", "json"):
            if param.name == "timeout" and name != "wait":
                continue
            names, help_text = option_line(param)
            lines += [".TP", f".B {escape(names)}", escape(help_text)]
    return lines


def render(group: click.Group, prog: str, version: str) -> str:
    ctx = click.Context(group, info_name=prog)
    date = time.strftime("%Y-%m-%d")
    lines = [
        f'.TH {prog.upper()} 1 "{date}" "{prog} {version}" "User Commands"',
        ".SH NAME",
        f"{prog} \\- {escape((group.help or '').splitlines()[0])}",
        ".SH SYNOPSIS",
        f".B {prog}",
        "[\\fIGLOBAL OPTIONS\\fR] \\fICOMMAND\\fR [\\fIARGS\\fR]...",
        ".SH DESCRIPTION",
        escape((group.help or "").split("\n\n", 1)[-1]),
        ".SH GLOBAL OPTIONS",
    ]
    for param in group.get_params(ctx):
        if isinstance(param, click.Option):
            names, help_text = option_line(param)
            lines += [".TP", f".B {escape(names)}", escape(help_text)]
    lines.append(".SH COMMANDS")
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        if command is not None:
            lines += command_section(ctx, name, command)
    lines.append(".SH EXIT STATUS")
    for status, meaning in EXIT_STATUSES:
        lines += [".TP", f".B {status}", escape(meaning)]
    lines += [
        ".SH ENVIRONMENT",
        ".TP",
        ".B CODYD_SOCKET",
        "The daemon socket when --socket is not given.",
        ".SH SEE ALSO",
        "codyd(1); docs/codyctl.md in the codyd source.",
    ]
    return "\n".join(lines) + "\n"
