"""Shell command lines as the codex and claude adapters read them."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from codyd.agents.shell import (
    MAX_SCRIPT_CHARS,
    files_read,
    is_test_command,
    looks_like_file,
    simple_commands,
    summaries_in,
    unwrap_shell,
)


@pytest.mark.parametrize(
    ("command", "script"),
    [
        ("bash -lc 'python -m pytest -q'", "python -m pytest -q"),
        (
            "/bin/bash -lc 'rg -n \"def divide|CalcError\" src tests'",
            'rg -n "def divide|CalcError" src tests',
        ),
        ("/bin/zsh -lc \"sed -n '1,120p' src/calc/ops.py\"", "sed -n '1,120p' src/calc/ops.py"),
        ('sh -c "echo \\"hi\\" \\$HOME"', 'echo "hi" $HOME'),
        ("/usr/bin/bash -l -c 'ls -la'", "ls -la"),
        ("bash -lc \"bash -lc 'pytest'\"", "pytest"),
        ("git status --short", "git status --short"),
        ("bash script.sh", "bash script.sh"),
        ("bash -lc 'echo a' extra", "bash -lc 'echo a' extra"),
        ("bash -lc 'unclosed", "bash -lc 'unclosed"),
        ("bash -lc 'a' && rm x", "bash -lc 'a' && rm x"),
        ("python -c 'print(1)'", "python -c 'print(1)'"),
    ],
)
def test_unwrap_shell(command: str, script: str) -> None:
    """`<shell> -lc <script>` becomes its script; anything else is kept as given."""
    assert unwrap_shell(command) == script


@pytest.mark.parametrize(
    ("script", "commands"),
    [
        ("cd src && cat a.py; ls | wc -l", [["cd", "src"], ["cat", "a.py"], ["ls"], ["wc", "-l"]]),
        ("tail -n 5 log.txt 2>/dev/null >out.txt", [["tail", "-n", "5", "log.txt"]]),
        ("cmd 2>&1 | head", [["cmd"], ["head"]]),
        ("grep '>' a.py '|' b", [["grep", ">", "a.py", "|", "b"]]),
        ("pytest -q # run the suite\nnpm test", [["pytest", "-q"], ["npm", "test"]]),
        ("echo a#b", [["echo", "a#b"]]),
        ("cat <<'EOF' > f.txt\nhi\nEOF", [["cat"], ["hi"], ["EOF"]]),
        ("FOO='a b' pytest x\\ y", [["FOO=a b", "pytest", "x y"]]),
        ("echo '' \"\"", [["echo", "", ""]]),
        ("a \\\n b", [["a", "b"]]),
    ],
)
def test_simple_commands(script: str, commands: list[list[str]]) -> None:
    """Scripts split at operators and newlines; redirections, fd numbers and comments drop out."""
    assert simple_commands(script) == commands


def test_simple_commands_refuses_an_unclosed_quote() -> None:
    """An unclosed quote is a ValueError, which the public helpers turn into 'nothing'."""
    with pytest.raises(ValueError, match="quote"):
        simple_commands("cat 'a.py")
    assert files_read("cat 'a.py") == []
    assert not is_test_command('pytest "-q')


@pytest.mark.parametrize(
    "command",
    [
        "pytest",
        "pytest -q tests/test_ops.py",
        "py.test -x",
        "/bin/bash -lc 'python -m pytest -q'",
        "python3 -m pytest",
        "python3.11 -W ignore -mpytest",
        ".venv/bin/python -m unittest discover",
        "python manage.py test",
        "uv run pytest -q",
        "uv run --with pytest-cov pytest",
        "poetry run pytest",
        "cd app && PYTHONPATH=src timeout 300 pytest -x 2>&1 | tail -n 30",
        "env -u CI FOO=1 pytest",
        "tox -e py311",
        "npm test",
        "npm t",
        "npm run test:unit",
        "npm --prefix web test",
        "pnpm test",
        "pnpm vitest run",
        "pnpm exec jest",
        "yarn test",
        "yarn jest --ci",
        "npx jest",
        "npx vitest run",
        "jest --coverage",
        "vitest",
        "bun test",
        "bun run test",
        "deno test -A",
        "cargo test",
        "cargo +nightly test --workspace",
        "cargo nextest run",
        "go test ./...",
        "make test",
        "make -C build check",
        "bash -lc \"bash -c 'go test ./...'\"",
    ],
)
def test_test_commands(command: str) -> None:
    """Test runners are recognised behind shells, wrappers, env assignments and pipes."""
    assert is_test_command(command)


@pytest.mark.parametrize(
    "command",
    [
        "",
        "git status",
        "python script.py",
        "python -c 'import pytest'",
        "pip install pytest",
        "cat tests/test_ops.py",
        "rg -n pytest src",
        "npm install",
        "npm run build",
        "yarn t",
        "bun run dev",
        "cargo build",
        "go build ./...",
        "make",
        "make install",
        "command -v pytest",
        "echo 'pytest'",
        "ls tests",
    ],
)
def test_not_test_commands(command: str) -> None:
    """Mentions of a runner (as an argument, a package, a lookup) are no test run."""
    assert not is_test_command(command)


@pytest.mark.parametrize(
    ("command", "paths"),
    [
        ("sed -n '1,120p' src/calc/ops.py", ["src/calc/ops.py"]),
        ("/bin/bash -lc \"sed -n '1,120p' src/calc/ops.py\"", ["src/calc/ops.py"]),
        ("sed -n -e '1,5p' -e '9p' a.py b.py", ["a.py", "b.py"]),
        ("sed -ne '1,5p' a.py", ["a.py"]),
        ("sed -n --expression=1p a.py", ["a.py"]),
        ("sed 's/a/b/' a.py", []),
        ("sed -n -i 's/a/b/p' a.py", []),
        ("sed -i.bak -n 1p a.py", []),
        ("cat a b", ["a", "b"]),
        ("cat -n Makefile", ["Makefile"]),
        ("cat a.py a.py", ["a.py"]),
        ("head -50 x", ["x"]),
        ("head -n 40 README.md", ["README.md"]),
        ("tail -n 50 log.txt 2>/dev/null", ["log.txt"]),
        ("tail -f -n +10 app.log", ["app.log"]),
        ("nl -ba src/app.py | sed -n '1,80p'", ["src/app.py"]),
        ("nl -b a src/app.py", ["src/app.py"]),
        ("cat > notes.txt", []),
        ("cat <<'EOF' > notes.txt\nbody\nEOF", []),
        ("cat *.py", []),
        ("cat $FILE ~/x.txt -", []),
        ("cat /dev/null", []),
        ('rg -n "def divide|CalcError" src tests', []),
        ("rg -n 'def divide' src/calc/ops.py", ["src/calc/ops.py"]),
        ("rg -n -g '*.py' divide src", []),
        ("rg -e divide ops.py", ["ops.py"]),
        ("rg ops.py", []),
        ("rg --files src/app.py", []),
        ("grep -rn divide src/calc/ops.py", ["src/calc/ops.py"]),
        ("grep -n divide .", []),
        ("grep -A 3 divide a.py", ["a.py"]),
        ("git show HEAD:src/app.py", []),
        ("ls -la src", []),
        ("cd src && cat app.py && head -5 ../README.md", ["app.py", "../README.md"]),
    ],
)
def test_files_read(command: str, paths: list[str]) -> None:
    """cat/nl/head/tail operands, `sed -n` files, and rg/grep's last operand when it names a file."""
    assert files_read(command) == paths


@pytest.mark.parametrize(
    ("word", "expected"),
    [
        ("src/app.py", True),
        ("ops.py", True),
        ("../.eslintrc.json", True),
        ("archive.tar.gz", True),
        ("src", False),
        (".", False),
        ("..", False),
        (".env", False),
        ("src/", False),
        ("*.py", False),
        ("$HOME/a.py", False),
        ("-v.py", False),
    ],
)
def test_looks_like_file(word: str, expected: bool) -> None:
    """A file is a name with an extension, not a directory, glob or expansion."""
    assert looks_like_file(word) is expected


def test_summaries_in_a_whole_output() -> None:
    """Every summary of a command's output, go's package block flushed at the end."""
    output = "....\n1 failed, 5 passed in 0.07s\nok  \tcalc\t0.01s\nFAIL\tcalc/ops\t0.02s\n"
    assert summaries_in(output) == [
        {"passed": 5, "failed": 1, "skipped": 0, "runner": "pytest"},
        {"passed": 1, "failed": 1, "skipped": 0, "runner": "go"},
    ]
    assert summaries_in("no summary here\n") == []


@given(st.text())
def test_shell_helpers_never_raise(command: str) -> None:
    """Any text at all is a command line the helpers can read without raising."""
    assert isinstance(unwrap_shell(command), str)
    assert isinstance(is_test_command(command), bool)
    assert all(isinstance(path, str) and path for path in files_read(command))


@given(
    st.lists(
        st.sampled_from(
            [
                "cat",
                "sed",
                "-n",
                "1p",
                "a.py",
                "'",
                '"',
                "\\",
                "|",
                "&&",
                ";",
                "\n",
                ">",
                "2",
                "#",
                " ",
                "bash",
                "-lc",
                "rg",
                "pytest",
                "$X",
            ]
        ),
        max_size=16,
    )
)
def test_shell_helpers_never_raise_on_shell_like_text(pieces: list[str]) -> None:
    """Shell-like fragments in any order never make the helpers raise."""
    command = " ".join(pieces)
    unwrap_shell(command)
    is_test_command(command)
    files_read(command)


def test_huge_scripts_are_not_read() -> None:
    """A script over MAX_SCRIPT_CHARS is kept as given, reads nothing and runs no tests."""
    script = "cat a.py; pytest; " + "x" * MAX_SCRIPT_CHARS
    wrapped = f"bash -lc '{script}'"
    assert unwrap_shell(wrapped) == wrapped
    assert files_read(script) == []
    assert not is_test_command(script)
    assert files_read(script[:100]) == ["a.py"]
