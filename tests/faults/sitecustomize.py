"""Faults injected into a test's codyd daemon, from outside its code (tests only).

A daemon started with this directory first on PYTHONPATH imports this module at
start-up. It wraps real functions of codyd so that they fail the way a bug would:

* ``FAULT_LINE``: the ``command`` adapter's line parser raises on that exact line.
* ``FAULT_RENEWALS``: the first N lease renewals raise.

Agents inherit the environment; they carry CODYD_RUN_ID and are left alone.
"""

from __future__ import annotations

import os
from typing import Any

if "CODYD_RUN_ID" not in os.environ:
    fault_line = os.environ.get("FAULT_LINE")
    fault_renewals = int(os.environ.get("FAULT_RENEWALS", "0"))

    if fault_line is not None:
        from codyd.agents.command import CommandAdapter

        parse_stdout = CommandAdapter.parse_stdout

        def faulty_parse_stdout(self: CommandAdapter, line: str) -> Any:
            if line == fault_line:
                raise RuntimeError(f"injected parser fault on {line!r}")
            return parse_stdout(self, line)

        CommandAdapter.parse_stdout = faulty_parse_stdout  # type: ignore[method-assign]

    if fault_renewals:
        from codyd.leases import LocalLeases

        renew_all = LocalLeases.renew_all
        left = [fault_renewals]

        async def faulty_renew_all(self: LocalLeases) -> dict[str, str]:
            if left[0] > 0:
                left[0] -= 1
                raise RuntimeError("injected lease renewal fault")
            return await renew_all(self)

        LocalLeases.renew_all = faulty_renew_all  # type: ignore[method-assign]
