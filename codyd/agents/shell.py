"""Shell command lines as the codex and claude adapters report them.

(Their JSON values are read by :mod:`codyd.agents.jsonline`.)

* **Unwrapping.** ``<shell> -lc '<script>'`` / ``<shell> -c "<script>"`` (``sh``, ``bash``,
  ``zsh``, ``dash``, ``ksh``, ``fish``, with or without a directory) becomes ``<script>``;
  anything else is kept as given.
* **Test runs.** A script is a test run when one of its simple commands (split at ``;``,
  ``&&``, ``||``, ``|``, ``&`` and newlines, after leading ``VAR=value`` words and wrappers
  such as ``env``, ``timeout 60``, ``time``, ``uv run``, ``poetry run`` or ``npx`` are
  skipped) is ``pytest`` / ``py.test``, ``python -m pytest|unittest|nose2``, ``python
  manage.py test``, ``tox``, ``jest``, ``vitest``, ``mocha``, ``npm|pnpm|yarn test`` (also
  ``npm t`` and ``run test``, ``run test:<name>``), ``pnpm|yarn jest|vitest``, ``bun test``,
  ``deno test``, ``cargo test|nextest``, ``go test`` or ``make test|check``.
* **File reads.** A command reads the files it names when it is ``cat`` or ``nl`` (every
  operand), ``head`` or ``tail`` (every operand), ``sed -n`` without ``-i`` (the operands
  after the script), or ``rg`` / ``grep`` / ``egrep`` / ``fgrep`` when its last operand after
  the pattern looks like a file, i.e. its name has an extension (``src/app.py``): a search
  of ``src`` or ``.`` reads no particular file. Operands with glob or expansion characters,
  ``-`` and ``/dev/*`` are never reads. Redirection targets are not operands.

Nothing here runs a shell; a script that cannot be tokenized (an unclosed quote) is kept
as given, is no test run and reads nothing, and so is a script over 64 KiB.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any, Final

from codyd.telemetry.runner_summary import TestSummaryDetector

# -- shell ----------------------------------------------------------------------------------

SHELLS: Final = frozenset({"sh", "bash", "zsh", "dash", "ksh", "fish"})
_SCRIPT_FLAGS: Final = frozenset({"-c", "-lc", "-cl", "-ic", "-ilc", "-lic"})
_ASSIGNMENT_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*=")
_FILE_NAME_RE = re.compile(r"[^/]*[^./][^/]*\.[A-Za-z0-9_+-]{1,16}")
_NOT_A_PATH_RE = re.compile(r"[*?\[\]{}$`~]|^-|^/dev/")
_PYTHON_RE = re.compile(r"python(?:\d+(?:\.\d+)*)?")
_MAX_NESTING: Final = 4
# Longer scripts (a file written through a here-document, say) are not read for test runs
# or file reads: reading them would cost more than it tells.
MAX_SCRIPT_CHARS: Final = 64 * 1024


class _Word(str):
    """A word of a shell command line (an operator is a plain ``str``)."""

    __slots__ = ()


# One piece of a shell line at a time; every class excludes the characters that start
# another piece, so scanning is linear.
_PIECE_RE = re.compile(
    r"""
      (?P<blank>[ \t\r]+)
    | (?P<newline>\n)
    | (?P<operator>[|&;()<>]+)
    | '(?P<single>[^']*)'
    | "(?P<double>(?:[^"\\]|\\.)*)"
    | \\(?P<escaped>.?)
    | (?P<comment>\#[^\n]*)
    | (?P<plain>[^ \t\r\n|&;()<>'"\\\#]+)
    | (?P<unclosed>['"])
    """,
    re.VERBOSE | re.DOTALL,
)
_DOUBLE_QUOTED_ESCAPE_RE = re.compile(r'\\([$`"\\\n])')
_SEPARATORS = frozenset({"blank", "newline", "operator", "comment"})


class _Words:
    """The word being read and the tokens finished so far."""

    def __init__(self) -> None:
        self.tokens: list[str] = []
        self.parts: list[str] = []
        self.started = self.quoted = False

    def add(self, text: str, quoted: bool) -> None:
        self.parts.append(text)
        self.started = True
        self.quoted = self.quoted or quoted

    def close(self, operator: str | None) -> None:
        word = "".join(self.parts)
        if operator and operator[0] in "<>" and not self.quoted and word.isdigit():
            self.started = False  # a file descriptor number (`2>/dev/null`), not an operand
        if self.started:
            self.tokens.append(_Word(word))
        self.parts.clear()
        self.started = self.quoted = False
        if operator is not None:
            self.tokens.append(operator)


def _tokens(script: str) -> list[str]:
    """Split a POSIX shell line into words (``_Word``) and operators; ValueError if unclosed."""
    words = _Words()
    position = 0
    while (match := _PIECE_RE.match(script, position)) is not None and match.end() > position:
        kind = match.lastgroup or ""
        value = match[kind]
        position = match.end()
        if kind == "unclosed":
            raise ValueError(f"unclosed {value} quote")
        if kind == "comment" and words.started:
            kind, value, position = "plain", "#", match.start() + 1  # `a#b` is one word
        if kind in _SEPARATORS:
            words.close(value if kind in ("newline", "operator") else None)
        elif kind == "double":
            words.add(_DOUBLE_QUOTED_ESCAPE_RE.sub(lambda m: m[1].strip("\n"), value), True)
        elif kind == "escaped":
            if value not in ("", "\n"):  # a backslash-newline continues the line
                words.add(value, True)
        else:
            words.add(value, kind == "single")
    words.close(None)
    return words.tokens


def simple_commands(script: str) -> list[list[str]]:
    """The word lists of the simple commands of ``script``, redirections left out."""
    commands: list[list[str]] = []
    current: list[str] = []
    skip_next = False
    for token in _tokens(script):
        if isinstance(token, _Word):
            if skip_next:
                skip_next = False
            else:
                current.append(str(token))
        elif "<" in token or ">" in token:
            skip_next = True  # the redirection's target (or here-document delimiter)
        else:
            if current:
                commands.append(current)
            current = []
            skip_next = False
    if current:
        commands.append(current)
    return commands


def _base(word: str) -> str:
    return word.rsplit("/", 1)[-1]


def _shell_script(argv: list[str]) -> str | None:
    """The script of ``<shell> -lc <script>`` (also ``-l -c``), or None."""
    if not argv or _base(argv[0]) not in SHELLS:
        return None
    flags: list[str] = []
    rest = argv[1:]
    while rest and rest[0].startswith("-") and len(flags) < 3:
        flags.append(rest.pop(0))
    if len(rest) != 1:
        return None
    if flags and (flags[-1] in _SCRIPT_FLAGS or flags[-2:] == ["-l", "-c"]):
        return rest[0]
    return None


def unwrap_shell(command: str) -> str:
    """The script that ``command`` runs through ``<shell> -lc``; ``command`` itself otherwise."""
    if len(command) > MAX_SCRIPT_CHARS:
        return command
    for _ in range(_MAX_NESTING):
        try:
            tokens = _tokens(command)
        except ValueError:
            return command
        if not all(isinstance(token, _Word) for token in tokens):
            return command
        script = _shell_script([str(token) for token in tokens])
        if script is None:
            return command
        command = script
    return command


def _programs(script: str, depth: int = 0) -> Iterator[list[str]]:
    """Every simple command of ``script`` with wrappers removed, nested shells included."""
    if len(script) > MAX_SCRIPT_CHARS:
        return
    try:
        commands = simple_commands(script)
    except ValueError:
        return
    for words in commands:
        argv = _strip_wrappers(words)
        if not argv:
            continue
        nested = _shell_script(argv)
        if nested is not None:
            if depth < _MAX_NESTING:
                yield from _programs(nested, depth + 1)
        else:
            yield argv


# Wrapper programs that run the command after their options, with the options taking a value.
_WRAPPERS: Final[dict[str, frozenset[str]]] = {
    "env": frozenset({"-u", "--unset", "-C", "--chdir", "-S"}),
    "timeout": frozenset({"-s", "--signal", "-k", "--kill-after"}),
    "time": frozenset({"-f", "--format", "-o", "--output"}),
    "nice": frozenset({"-n", "--adjustment"}),
    "nohup": frozenset(),
    "command": frozenset(),
    "exec": frozenset({"-a"}),
    "stdbuf": frozenset({"-i", "-o", "-e"}),
    "xvfb-run": frozenset({"-n", "-s", "-f", "-e", "-p", "-w"}),
    "npx": frozenset({"-p", "--package", "-c", "--call"}),
    "pnpx": frozenset(),
    "bunx": frozenset({"-p", "--package"}),
}
# `<tool> run|exec|dlx ...` wrappers, with the flags of the subcommand that take a value.
_RUNNERS: Final[dict[str, tuple[frozenset[str], frozenset[str]]]] = {
    "uv": (
        frozenset({"run"}),
        frozenset({"--with", "-p", "--python", "--extra", "--group", "--env-file", "--directory"}),
    ),
    "poetry": (frozenset({"run"}), frozenset({"-C", "--directory", "-P", "--project"})),
    "pipenv": (frozenset({"run"}), frozenset()),
    "pdm": (frozenset({"run"}), frozenset({"-p", "--project"})),
    "hatch": (frozenset({"run"}), frozenset({"-e", "--env"})),
    "rye": (frozenset({"run"}), frozenset()),
    "pnpm": (frozenset({"exec", "dlx"}), frozenset({"-C", "--dir", "--filter", "-F"})),
    "yarn": (frozenset({"exec", "dlx"}), frozenset({"--cwd"})),
}


def _strip_wrappers(words: list[str]) -> list[str]:
    """Drop leading ``VAR=value`` words and wrapper programs (``env``, ``timeout 60``, ...)."""
    argv = list(words)
    for _ in range(8):
        while argv and _ASSIGNMENT_RE.match(argv[0]):
            argv.pop(0)
        if not argv:
            return argv
        name = _base(argv[0])
        if name == "command" and any(arg in ("-v", "-V") for arg in argv[1:2]):
            return []  # `command -v pytest` looks a program up
        if name in _WRAPPERS:
            argv = _skip_options(argv[1:], _WRAPPERS[name])
            if name == "timeout" and argv:
                argv = argv[1:]  # the duration
            elif name == "nice" and argv and re.fullmatch(r"-\d+", argv[0]):
                argv = argv[1:]
        elif name in _RUNNERS and len(argv) > 1 and argv[1] in _RUNNERS[name][0]:
            argv = _skip_options(argv[2:], _RUNNERS[name][1])
        else:
            return argv
    return argv


def _skip_options(args: list[str], valued: frozenset[str]) -> list[str]:
    """``args`` from its first operand on (``--`` ends the options)."""
    i = 0
    while i < len(args) and args[i].startswith("-") and args[i] != "-":
        if args[i] == "--":
            return args[i + 1 :]
        i += 2 if args[i] in valued else 1
    return args[i:]


def _operands(args: list[str], valued: frozenset[str]) -> list[str]:
    """The operands among ``args``: options and their values removed, ``--`` honoured."""
    operands: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            return operands + args[i + 1 :]
        if arg.startswith("-") and arg != "-":
            i += 2 if arg in valued else 1
            continue
        operands.append(arg)
        i += 1
    return operands


# -- test runs ------------------------------------------------------------------------------

_DIRECT_RUNNERS: Final = frozenset({"pytest", "py.test", "tox", "jest", "vitest", "mocha"})
_PACKAGE_MANAGERS: Final = frozenset({"npm", "pnpm", "yarn", "bun"})
_PM_VALUED: Final = frozenset({"--prefix", "-C", "--dir", "--cwd", "--filter", "-F", "-w"})
_PYTHON_VALUED: Final = frozenset({"-X", "-W", "-Q"})


def is_test_command(command: str) -> bool:
    """Whether ``command`` (shell-wrapped or not) runs a test suite (rules in the docstring)."""
    return any(_is_test_argv(argv) for argv in _programs(unwrap_shell(command)))


def _is_test_argv(argv: list[str]) -> bool:
    name = _base(argv[0])
    args = argv[1:]
    if name in _DIRECT_RUNNERS:
        return True
    if _PYTHON_RE.fullmatch(name):
        return _is_python_test(args)
    if name in _PACKAGE_MANAGERS:
        return _is_package_test(name, args)
    operands = _operands(args, frozenset({"-C", "-f", "--file", "--directory", "-j"}))
    if name == "make":
        return any(
            target in ("test", "tests", "check") or target.startswith(("test-", "test_"))
            for target in operands
            if "=" not in target
        )
    first = next((arg for arg in operands if not arg.startswith("+")), None)
    if name == "cargo":
        return first in ("test", "nextest")
    return name in ("go", "deno") and first == "test"


def _is_python_test(args: list[str]) -> bool:
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "-m" or (arg.startswith("-m") and len(arg) > 2):
            module = arg[2:] or (args[i + 1] if i + 1 < len(args) else "")
            return module in ("pytest", "unittest", "nose2", "tox")
        if arg == "-c" or not arg.startswith("-"):
            # `python -c ...` runs code; `python manage.py test` is Django's runner.
            return _base(arg) == "manage.py" and args[i + 1 : i + 2] == ["test"]
        i += 2 if arg in _PYTHON_VALUED else 1
    return False


def _is_package_test(name: str, args: list[str]) -> bool:
    operands = _operands(args, _PM_VALUED)
    if not operands:
        return False
    sub = operands[0]
    if sub in ("test", "t", "tst") and (name == "npm" or sub == "test"):
        return True
    if sub in ("run", "run-script") and len(operands) > 1:
        script = operands[1]
        return script == "test" or script.startswith(("test:", "test-"))
    return name != "npm" and sub in ("jest", "vitest", "mocha")


def summaries_in(output: str) -> list[dict[str, Any]]:
    """The ``test_run_completed`` data of every test summary in a command's whole output."""
    detector = TestSummaryDetector()
    summaries = [summary for line in output.splitlines() for summary in detector.feed(line)]
    return [summary.to_data() for summary in summaries + detector.flush()]


# -- file reads -----------------------------------------------------------------------------

_HEAD_TAIL_VALUED: Final = frozenset({"-n", "-c", "--lines", "--bytes", "-s", "--sleep-interval"})
# Programs that read every operand, with their options that take a separate value.
_READERS: Final[dict[str, frozenset[str]]] = {
    "cat": frozenset(),
    "nl": frozenset({f"-{flag}" for flag in "bdfhilnsvw"}),
    "head": _HEAD_TAIL_VALUED,
    "tail": _HEAD_TAIL_VALUED,
}
_RG_VALUED: Final = frozenset(
    {
        "-e", "--regexp", "-f", "--file", "-g", "--glob", "--iglob", "-t", "--type", "-T",
        "--type-not", "-A", "-B", "-C", "--after-context", "--before-context", "--context",
        "-m", "--max-count", "-j", "--threads", "-M", "--max-columns", "-r", "--replace",
        "-d", "--max-depth", "-E", "--encoding", "--sort", "--sortr", "--color", "--colors",
        "--type-add", "--pre", "--pre-glob", "--engine", "--max-filesize",
    }
)  # fmt: skip
_GREP_VALUED: Final = frozenset(
    {
        "-e", "--regexp", "-f", "--file", "-A", "-B", "-C", "--after-context",
        "--before-context", "--context", "-m", "--max-count", "-d", "--directories", "-D",
        "--devices", "--include", "--exclude", "--exclude-dir", "--label", "--binary-files",
    }
)  # fmt: skip
_SEARCH_PATTERN_FLAGS: Final = frozenset({"-e", "--regexp", "-f", "--file"})


def files_read(command: str) -> list[str]:
    """The paths ``command`` (shell-wrapped or not) reads, by the rules in the docstring."""
    paths: list[str] = []
    for argv in _programs(unwrap_shell(command)):
        for path in _reads(_base(argv[0]), argv[1:]):
            if path not in paths and looks_like_path(path):
                paths.append(path)
    return paths


def looks_like_path(word: str) -> bool:
    """Whether ``word`` can name a file as it stands (no globs, expansions or options)."""
    return bool(word) and _NOT_A_PATH_RE.search(word) is None


def looks_like_file(word: str) -> bool:
    """Whether ``word`` names a file rather than a directory: its name has an extension."""
    return looks_like_path(word) and _FILE_NAME_RE.fullmatch(_base(word)) is not None


def _reads(name: str, args: list[str]) -> list[str]:
    if name in _READERS:
        operands = _operands(args, _READERS[name])
        return [arg for arg in operands if not re.fullmatch(r"\+\d+", arg)]
    if name == "sed":
        return _sed_reads(args)
    if name == "rg":
        return _search_reads(args, _RG_VALUED)
    if name in ("grep", "egrep", "fgrep"):
        return _search_reads(args, _GREP_VALUED)
    return []


def _sed_reads(args: list[str]) -> list[str]:
    """The files of ``sed -n [-e script | script] file...``; none when editing in place."""
    quiet = script_given = False
    operands: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        i += 1
        if arg == "--":
            operands += args[i:]
            break
        if arg == "-" or not arg.startswith("-"):
            operands.append(arg)
        elif arg.startswith("--in-place"):
            return []
        elif arg.startswith("--"):
            quiet = quiet or arg in ("--quiet", "--silent")
            if arg.split("=", 1)[0] in ("--expression", "--file"):
                script_given = True
                i += 0 if "=" in arg else 1
        else:
            for position, flag in enumerate(arg[1:], start=2):
                if flag == "i":
                    return []
                quiet = quiet or flag == "n"
                if flag in "efl":  # the rest of the word, or else the next argument, is its value
                    script_given = script_given or flag != "l"
                    i += 1 if position == len(arg) else 0
                    break
    if not quiet:
        return []
    return operands if script_given else operands[1:]


def _search_reads(args: list[str], valued: frozenset[str]) -> list[str]:
    """The last operand of ``rg`` / ``grep`` after the pattern, when it names a file."""
    if "--files" in args:
        return []
    operands = _operands(args, valued)
    pattern_given = any(
        arg in _SEARCH_PATTERN_FLAGS or arg.startswith(("--regexp=", "--file=")) for arg in args
    )
    paths = operands if pattern_given else operands[1:]
    if paths and looks_like_file(paths[-1]):
        return [paths[-1]]
    return []
