"""Building a turn's prompt: the prompt text or file, plus context files (docs/agents.md §1)."""

from __future__ import annotations

from dataclasses import dataclass, field

from codyd.errors import InvalidParams
from codyd.spec import RunSpec, check_inside_resolved


@dataclass(slots=True)
class BuiltPrompt:
    text: bytes
    warnings: list[str] = field(default_factory=list)


class PromptError(Exception):
    """The prompt cannot be built (its file vanished or left the workspace)."""


def build_prompt(spec: RunSpec) -> BuiltPrompt:
    workspace = spec.workspace  # resolved when the run was started
    warnings: list[str] = []
    if spec.prompt_file is not None:
        try:
            path = check_inside_resolved(workspace, spec.prompt_file, "prompt_file")
            text = path.read_text(encoding="utf-8", errors="replace")
        except (InvalidParams, OSError) as exc:
            raise PromptError(f"cannot read prompt_file {spec.prompt_file!r}: {exc}") from exc
    else:
        text = spec.prompt or ""
    parts = [text]
    for index, name in enumerate(spec.context_files):
        try:
            path = check_inside_resolved(workspace, name, f"context_files.{index}")
            content = path.read_text(encoding="utf-8", errors="replace")
        except InvalidParams as exc:
            warnings.append(f"context file {name!r} skipped: {exc.message}")
            continue
        except OSError as exc:
            warnings.append(f"context file {name!r} skipped: {exc.strerror or exc}")
            continue
        parts.append(f"\n\n## {name}\n\n{content}")
    return BuiltPrompt("".join(parts).encode("utf-8"), warnings)
