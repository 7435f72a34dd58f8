"""Requests, events and errors between a Python client and a Python server over QUIC."""

import asyncio
import builtins

import pytest

import echostream
from conftest import eventually
from echostream import Code


async def test_arguments_travel_as_json(make_server, connected):
    server = make_server()

    @server.handler("math.add")
    def add(a, b):
        return a + b

    @server.handler("echo")
    async def echo(value):
        return value

    @server.handler("nothing")
    def nothing():
        return "none taken"

    @server.handler("optional")
    def optional(a, b=10):
        return a * b

    client = await connected(server)
    assert await client.request("math.add", 2, 3) == 5
    value = {"s": "ü", "n": [1, 2.5, None, True], "nested": {"k": []}}
    assert await client.request("echo", value) == value
    assert await client.request("echo", (1, 2)) == [1, 2]
    assert await client.request("echo", b"\x00\xff") == [0, 255]
    assert await client.request("nothing") == "none taken"
    assert await client.request("optional", 4) == 40
    assert await client.request("optional", 4, 2) == 8


async def test_context_names_the_caller(make_server, connected):
    server = make_server()

    @server.handler("whoami")
    async def whoami(ctx: echostream.Context, tag):
        return {
            "addr": ctx.peer_address,
            "method": ctx.method,
            "md": ctx.metadata,
            "tag": tag,
            "remaining": ctx.remaining,
        }

    client = await connected(server)
    info = client.info()
    out = await client.request("whoami", "t", metadata={"trace": "42"}, timeout=7)
    assert out["method"] == "whoami"
    assert out["tag"] == "t"
    assert out["md"] == {"trace": "42"}
    assert 0 < out["remaining"] <= 7
    assert out["addr"].startswith("127.0.0.1:")
    assert info["remote"] == server.address
    assert info["fingerprint"] == server.fingerprint


async def test_handler_errors_reach_the_caller(make_server, connected):
    server = make_server()

    @server.handler("coded")
    def coded():
        raise echostream.RemoteError(1001, "no such track")

    @server.handler("broken")
    async def broken(x):
        raise KeyError(x)

    @server.handler("two")
    def two(a, b):
        return a

    @server.handler("unencodable")
    def unencodable():
        return {1, 2}

    client = await connected(server)
    with pytest.raises(echostream.RemoteError) as e:
        await client.request("coded")
    assert (e.value.code, e.value.message, e.value.method) == (1001, "no such track", "coded")
    assert "coded" in str(e.value)

    with pytest.raises(echostream.RemoteError) as e:
        await client.request("broken", "k")
    assert e.value.code == Code.APPLICATION
    assert e.value.message == "KeyError: 'k'"

    with pytest.raises(echostream.BadPayloadError, match="takes 2 arguments"):
        await client.request("two", 1)

    with pytest.raises(echostream.RemoteError, match="cannot travel as JSON") as e:
        await client.request("unencodable")
    assert e.value.code == Code.INTERNAL

    with pytest.raises(echostream.UnknownMethodError, match="`missing`") as e:
        await client.request("missing")
    assert isinstance(e.value, echostream.EchoStreamError)
    assert e.value.method == "missing"

    # The connection survives all of it.
    assert await client.request("two", 1, 2) == 1


async def test_bad_input_fails_before_sending(make_server, connected):
    server = make_server()
    calls = []

    @server.handler("echo")
    def echo(v):
        calls.append(v)
        return v

    client = await connected(server)
    with pytest.raises(TypeError, match="set"):
        await client.request("echo", {1, 2})
    with pytest.raises(TypeError, match="method must be a str"):
        await client.request(42)
    with pytest.raises(TypeError, match="NaN|JSON"):
        await client.request("echo", float("nan"))
    with pytest.raises(TypeError, match="timeout"):
        await client.request("echo", 1, timeout="soon")
    with pytest.raises(ValueError, match="timeout"):
        await client.request("echo", 1, timeout=-1)
    with pytest.raises(TypeError, match="metadata"):
        await client.request("echo", 1, metadata={"k": 1})
    with pytest.raises(TypeError, match="event"):
        await client.emit(None, 1)
    assert calls == []
    with pytest.raises(TypeError, match="bind"):
        echostream.Server(5000)
    with pytest.raises(TypeError, match="addr"):
        await echostream.connect(("127.0.0.1", 5000))
    with pytest.raises(ValueError, match="fingerprint"):
        await echostream.connect("127.0.0.1:1", pin="not-a-fingerprint")


async def test_timeouts_are_timeout_errors_and_cancel_the_handler(make_server, connected):
    server = make_server()
    finished = asyncio.Event()
    cancelled = asyncio.Event()

    @server.handler("slow")
    async def slow():
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        finished.set()

    @server.handler("fast")
    def fast():
        return "ok"

    client = await connected(server)
    with pytest.raises(echostream.TimeoutError, match="`slow`") as e:
        await client.request("slow", timeout=0.2)
    assert isinstance(e.value, builtins.TimeoutError)
    # The deadline travels with the call: the server drops it and the Python task is cancelled.
    await asyncio.wait_for(cancelled.wait(), 5)
    assert not finished.is_set()
    assert await client.request("fast") == "ok"


async def test_cancelling_a_pending_call(make_server, connected):
    server = make_server()
    started = asyncio.Event()
    cancelled = asyncio.Event()

    @server.handler("forever")
    async def forever():
        started.set()
        try:
            await asyncio.Event().wait()
        finally:
            cancelled.set()

    @server.handler("fast")
    def fast():
        return "ok"

    client = await connected(server)
    task = asyncio.ensure_future(client.request("forever"))
    await asyncio.wait_for(started.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # Dropping the Rust future cancels the call on the server too.
    await asyncio.wait_for(cancelled.wait(), 5)
    assert await client.request("fast") == "ok"
    # wait_for's own timeout cancels the same way.
    with pytest.raises(builtins.TimeoutError):
        await asyncio.wait_for(client.request("forever"), 0.2)
    assert await client.request("fast") == "ok"


async def test_events_both_ways(make_server, connected):
    server = make_server()
    got = asyncio.Queue()

    @server.listener("user.logged_out")
    async def logged_out(ctx, user):
        await got.put((ctx.method, user, ctx.peer_address))

    @server.listener("sync.listener")
    def sync_listener(value):
        got.put_nowait(("sync", value, None))

    client = await connected(server)
    await client.emit("user.logged_out", {"user": "ada"})
    await client.emit("sync.listener", [1, 2])
    first = await asyncio.wait_for(got.get(), 5)
    second = await asyncio.wait_for(got.get(), 5)
    assert {first[0], second[0]} == {"user.logged_out", "sync"}
    for item in (first, second):
        if item[0] == "sync":
            assert item[1] == [1, 2]
        else:
            assert item[1] == {"user": "ada"}

    news = client.subscribe("news")
    # A subscription registered after connect sees broadcasts from then on.
    await eventually(server.peers)
    assert await server.broadcast("news", {"n": 1}) == 1
    assert await asyncio.wait_for(news.__anext__(), 5) == {"n": 1}
    await server.broadcast("news", "two")
    async for value in news:
        assert value == "two"
        break


async def test_server_calls_back_the_client(make_server, connected):
    server = make_server()

    @server.handler("ask.back")
    async def ask_back(ctx, name):
        return await ctx.peer.request("client.greet", name)

    router = echostream.Router()

    @router.handler("client.greet")
    def greet(name):
        return f"hello {name}"

    client = await connected(server, router=router)
    assert await client.request("ask.back", "ada") == "hello ada"
    (peer,) = await eventually(server.peers)
    assert await peer.request("client.greet", "bob") == "hello bob"
    assert peer.address == client.info()["remote"] or peer.address.startswith("127.0.0.1:")


async def test_connect_failures_are_connection_and_trust_errors(make_server):
    server = make_server()
    await server.start()
    try:
        with pytest.raises(echostream.TrustError, match=server.address):
            await echostream.connect(server.address, pin="sha256:" + "00" * 32, timeout=5)
        with pytest.raises(ConnectionError) as e:
            # Nothing listens on port 9 of 127.0.0.1: the handshake times out.
            await echostream.connect("127.0.0.1:9", insecure=True, timeout=0.5)
        assert isinstance(e.value, echostream.EchoStreamError)
        assert "127.0.0.1:9" in str(e.value)
    finally:
        await server.close()


async def test_closed_connection_fails_every_pending_call(make_server, connected):
    server = make_server()

    @server.handler("forever")
    async def forever():
        await asyncio.Event().wait()

    client = await connected(server)
    pending = [asyncio.ensure_future(client.request("forever")) for _ in range(3)]
    for peer in await eventually(server.peers):
        await eventually(lambda: peer.info()["requests_running"] == 3)
        peer.close("test closes it")
    results = await asyncio.wait_for(asyncio.gather(*pending, return_exceptions=True), 10)
    for r in results:
        assert isinstance(r, ConnectionError), r
        assert isinstance(r, echostream.EchoStreamError)


async def test_clock_ping_info_and_connection_events(make_server, connected):
    server = make_server()
    await server.start()
    events = server.connection_events()
    client = await connected(server)
    first = await asyncio.wait_for(events.__anext__(), 5)
    assert first["event"] == "connected"
    assert await client.ping() > 0
    clock = client.clock()
    await clock.synced(samples=3, timeout=5)
    assert clock.now() is not None
    assert abs(clock.offset_nanos()) < 1_000_000_000
    assert clock.error_bound() is not None
    assert clock.rtt() is not None
    info = client.info()
    assert info["bytes_sent"] > 0 and info["rtt"] > 0
    await client.close()
    gone = await asyncio.wait_for(events.__anext__(), 5)
    assert gone["event"] == "disconnected"


async def test_async_with_and_graceful_close(make_server):
    server = make_server()
    started = asyncio.Event()
    finished = []

    @server.handler("slowish")
    async def slowish():
        started.set()
        await asyncio.sleep(0.3)
        finished.append(True)
        return "done"

    async with server:
        client = await echostream.connect(server.address, pin=server.fingerprint)
        call = asyncio.ensure_future(client.request("slowish"))
        await started.wait()
        # The server counts the call as running a moment after the handler starts (the Rust
        # task registers it after its first poll); graceful close waits for what it counts.
        (peer,) = await eventually(server.peers)
        await eventually(lambda: peer.info()["requests_running"])
    # Leaving the block closed the server gracefully: the running call finished first.
    assert finished == [True]
    # Known core limitation (PY_NOTES): the server closes the connection once the answer is
    # handed to QUIC, not once it is acknowledged, so the client sometimes loses it.
    try:
        assert await call == "done"
    except echostream.ConnectionClosedError as e:
        assert "server shut down" in str(e)
    await client.close()


async def test_cancelling_a_pending_connect_returns():
    # Nothing answers on port 9: the handshake would wait for its 30 s timeout. wait_for
    # cancels it after 0.3 s; the outer bound turns a hang into a failure.
    async def attempt():
        with pytest.raises(builtins.TimeoutError):
            await asyncio.wait_for(
                echostream.connect("127.0.0.1:9", insecure=True, timeout=30), 0.3
            )

    await asyncio.wait_for(attempt(), 10)


async def test_wrong_types_name_the_parameter(make_server, connected):
    server = make_server()

    @server.stream_handler("sink")
    async def sink(stream):
        await stream.read_to_end()

    client = await connected(server)
    s = await client.open_stream("sink")
    with pytest.raises(TypeError, match="data"):
        await s.write_all("text is not bytes")
    with pytest.raises(TypeError, match="n"):
        await s.read("ten")
    with pytest.raises(ValueError, match="larger than one read"):
        await s.read(1 << 40)
    with pytest.raises(TypeError, match="handler of `x` must be callable"):
        server.handler("x")(42)
    with pytest.raises(TypeError, match="identity"):
        echostream.Server("127.0.0.1:0", identity="ephemeral")
    await s.write_eof()


async def test_tokens_name_the_caller(make_server, connected):
    server = make_server(tokens={"s3cret": "alice"}, require_token=True)

    @server.handler("who")
    def who(ctx):
        return ctx.identity

    client = await connected(server, token="s3cret")
    assert await client.request("who") == "alice"
    with pytest.raises(echostream.EchoStreamError) as e:
        c = await echostream.connect(server.address, pin=server.fingerprint, token="wrong")
        await c.request("who")
    assert isinstance(e.value, (echostream.RejectedError, echostream.UnauthenticatedError)), e.value


async def test_many_concurrent_calls_each_get_their_own_result_or_error(make_server, connected):
    server = make_server()

    @server.handler("square")
    async def square(n):
        await asyncio.sleep(0.001 * (n % 7))
        if n % 10 == 3:
            raise echostream.RemoteError(1000 + n, f"no square for {n}")
        return n * n

    client = await connected(server)
    results = await asyncio.gather(*(client.request("square", n) for n in range(300)), return_exceptions=True)
    for n, r in enumerate(results):
        if n % 10 == 3:
            assert isinstance(r, echostream.RemoteError) and r.code == 1000 + n, (n, r)
        else:
            assert r == n * n, (n, r)


def test_calls_from_two_event_loops_in_two_threads_complete_on_their_own_loops():
    import threading

    async def serve_and_call(out, i):
        server = echostream.Server("127.0.0.1:0", identity=echostream.Identity.ephemeral())

        @server.handler("twice")
        def twice(n):
            return 2 * n

        async with server:
            client = await echostream.connect(server.address, pin=server.fingerprint)
            try:
                out[i] = await asyncio.gather(*(client.request("twice", n) for n in range(50)))
            finally:
                await client.close()

    out = [None, None]
    threads = [threading.Thread(target=lambda i=i: asyncio.run(serve_and_call(out, i))) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert out == [[2 * n for n in range(50)]] * 2
