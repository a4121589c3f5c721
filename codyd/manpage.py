"""Man pages of codyd and codyctl, written in roff from their click definitions.

Both commands print theirs (``codyd man``, ``codyctl man``): made from the same
definitions that parse the command line, a page cannot drift from the program. Plain
click only, no trio: codyctl imports it.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import click


@dataclass(frozen=True, slots=True)
class Page:
    """What a page says beyond its commands and options."""

    prog: str
    version: str
    exit_statuses: Sequence[tuple[str, str]]
    environment: Sequence[tuple[str, str]]
    see_also: str
    # Global options shown once under GLOBAL OPTIONS, not again under each command.
    global_options: frozenset[str] = frozenset()


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


def command_section(ctx: click.Context, name: str, command: click.Command, page: Page) -> list[str]:
    sub = click.Context(command, info_name=name, parent=ctx)
    usage = " ".join(command.collect_usage_pieces(sub))
    lines = [".SS " + escape(f"{name} {usage}"), escape(command.help or "")]
    for param in command.get_params(sub):
        if isinstance(param, click.Option) and param.name != "help":
            if param.name in page.global_options:
                continue
            names, help_text = option_line(param)
            lines += [".TP", f".B {escape(names)}", escape(help_text)]
    return lines


def render(group: click.Group, page: Page) -> str:
    prog = page.prog
    ctx = click.Context(group, info_name=prog)
    date = time.strftime("%Y-%m-%d")
    lines = [
        f'.TH {prog.upper()} 1 "{date}" "{prog} {page.version}" "User Commands"',
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
            lines += command_section(ctx, name, command, page)
    lines.append(".SH EXIT STATUS")
    for status, meaning in page.exit_statuses:
        lines += [".TP", f".B {status}", escape(meaning)]
    lines.append(".SH ENVIRONMENT")
    for variable, meaning in page.environment:
        lines += [".TP", f".B {escape(variable)}", escape(meaning)]
    lines += [".SH SEE ALSO", escape(page.see_also)]
    return "\n".join(lines) + "\n"
