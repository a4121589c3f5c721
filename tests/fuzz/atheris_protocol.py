"""Coverage-guided fuzzing (atheris) of everything a client's bytes reach before a handler.

Run: python tests/fuzz/atheris_protocol.py -runs=50000
Frames are split, decoded, parsed as requests, and their params fed to the run-spec
validator and the sentinel parser; anything but a CodydError is a crash.
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports():
    import msgpack

    from codyd.errors import CodydError
    from codyd.protocol import FrameDecoder, parse_request
    from codyd.spec import parse_run_spec
    from codyd.telemetry.sentinel import parse_sentinel


def one_input(data: bytes) -> None:
    provider = atheris.FuzzedDataProvider(data)
    split = provider.ConsumeIntInRange(0, 64)
    raw = provider.ConsumeBytes(len(data))
    decoder = FrameDecoder(max_frame_bytes=1 << 16)
    try:
        messages = decoder.feed(raw[:split]) + decoder.feed(raw[split:])
    except CodydError:
        return
    for message in messages:
        try:
            request = parse_request(message)
            parse_run_spec(request.params, workspace_roots=())
        except CodydError:
            pass
    try:
        body = msgpack.unpackb(raw, raw=False)
    except Exception:
        body = None
    if isinstance(body, str):
        parse_sentinel(body)
    parse_sentinel(raw.decode("utf-8", "replace"))


def main() -> None:
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
