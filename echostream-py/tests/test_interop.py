"""Python ↔ Rust: a Python client against a Rust server, a Rust client against a Python server.

The Rust side is the `py_interop` example of the root crate (examples/py_interop.rs), built by
`.ci/run` before pytest (or set ECHOSTREAM_PY_INTEROP to its path).
"""

import asyncio
import json
import os
import pathlib
import subprocess

import pytest

import echostream

ROOT = pathlib.Path(__file__).resolve().parents[2]


def interop_binary() -> str:
    path = os.environ.get("ECHOSTREAM_PY_INTEROP")
    if path:
        return path
    subprocess.run(
        ["cargo", "build", "--quiet", "--example", "py_interop"], cwd=ROOT, check=True
    )
    return str(ROOT / "target" / "debug" / "examples" / "py_interop")


@pytest.fixture(scope="module")
def binary():
    return interop_binary()


@pytest.fixture
async def rust_server(binary):
    proc = await asyncio.create_subprocess_exec(
        binary, "server", stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    line = await asyncio.wait_for(proc.stdout.readline(), 60)
    addr, fingerprint = line.decode().split()
    yield addr, fingerprint
    proc.stdin.close()
    await asyncio.wait_for(proc.wait(), 30)


async def test_python_client_calls_rust_handlers(rust_server):
    addr, fingerprint = rust_server
    got = asyncio.Queue()
    router = echostream.Router()

    @router.listener("interop.note")
    def note(text):
        got.put_nowait(text)

    async with await echostream.connect(addr, pin=fingerprint, router=router) as client:
        # Several arguments travel as a JSON array: the Rust handler takes the tuple (i64, i64).
        assert await client.request("interop.add", 2, 40) == 42
        value = {"a": [1, "two", None], "b": 1.5}
        assert await client.request("interop.echo", value) == value
        # bytes travel as an array of integers: a Rust Vec<u8>.
        assert await client.request("interop.bytes", b"\x01\x02\xff") == 258
        with pytest.raises(echostream.RemoteError) as e:
            await client.request("interop.fail")
        assert (e.value.code, e.value.message) == (1042, "refused on purpose")
        with pytest.raises(echostream.RemoteError, match="does not fit") as e:
            await client.request("interop.add", 2**63 - 1, 1)
        assert e.value.code == 1002
        with pytest.raises(echostream.BadPayloadError, match="interop.add"):
            await client.request("interop.add", "x", "y")
        with pytest.raises(echostream.TimeoutError):
            await client.request("interop.sleep", 5000, timeout=0.2)
        assert await client.request("interop.sleep", 1) == 1
        # A Rust handler emits an event back with the JSON codec to a Python listener.
        await client.request("interop.notify", "hi python")
        assert await asyncio.wait_for(got.get(), 5) == "hi python"
        s = await client.open_stream("interop.upper")
        await s.write_all(b"shout")
        await s.write_eof()
        assert await s.read_to_end() == b"SHOUT"
        # JSON messages against a Rust StreamDuplex<i64>.
        m = await client.open_message_stream("interop.sum")
        totals = []
        for n in (1, 2, 39):
            await m.send(n)
            totals.append(await m.recv())
        await m.finish()
        assert totals == [1, 3, 42]
        with pytest.raises(EOFError):
            await m.recv()


async def test_rust_client_calls_python_handlers(binary, make_server):
    server = make_server()
    events = []
    seen = asyncio.Event()

    @server.handler("py.add")
    def add(a, b):
        return a + b

    @server.handler("py.greet")
    async def greet(ctx, name):
        return f"hello {name}"

    @server.handler("py.fail")
    def fail():
        raise echostream.RemoteError(1007, "python says no")

    @server.listener("py.event")
    def on_event(value):
        events.append(value)
        seen.set()

    @server.handler("py.events")
    async def get_events():
        await asyncio.wait_for(seen.wait(), 5)
        return events

    @server.stream_handler("py.echo")
    async def echo(stream):
        data = await stream.read_to_end()
        await stream.write_all(data + b" / pong from python")
        await stream.write_eof()

    async with server:
        proc = await asyncio.create_subprocess_exec(
            binary, "client", server.address, server.fingerprint,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode == 0, err.decode()
    checks = {}
    for line in out.decode().splitlines():
        item = json.loads(line)
        checks[item["check"]] = item["value"]
    assert checks["add"] == 42
    assert checks["greet"] == "hello rust"
    # A bincode call to a Python handler is answered BAD_PAYLOAD, naming the codec it needs.
    assert "JSON codec" in checks["bincode"] and "py.add" in checks["bincode"]
    assert checks["fail"] == [1007, "python says no"]
    assert checks["stream"] == "ping from rust / pong from python"
    assert checks["events"] == ["from rust"]
