"""Server admission (approve via event, limits) and the client's builder options from Python."""

import asyncio
import gc
import os

import pytest

import echostream
from conftest import eventually


async def test_approve_via_event_admits_or_rejects_with_the_reason(make_server):
    server = make_server(approve_connections=True)
    seen = []

    async def decide():
        async for request in server.connection_requests():
            seen.append((request.remote, request.metadata))
            if request.metadata.get("name") == "mallory":
                request.reject("mallory is not welcome here")
            else:
                request.approve()
            with pytest.raises(RuntimeError, match="already decided"):
                request.approve()

    @server.handler("hi")
    def hi():
        return "hi"

    async with server:
        decider = asyncio.create_task(decide())
        async with await echostream.connect(server.address, pin=server.fingerprint, hello={"name": "alice"},
                                            timeout=5) as client:
            assert await client.request("hi") == "hi"
        with pytest.raises(echostream.RejectedError, match="mallory is not welcome here"):
            await echostream.connect(server.address, pin=server.fingerprint, hello={"name": "mallory"}, timeout=5)
        with pytest.raises(RuntimeError, match="already taken"):
            server.connection_requests()
        decider.cancel()
    assert [m for _, m in seen] == [{"name": "alice"}, {"name": "mallory"}]
    assert all(remote.startswith("127.0.0.1:") for remote, _ in seen)


async def test_connection_requests_need_approve_connections(make_server):
    async with make_server() as server:
        with pytest.raises(RuntimeError, match="approve_connections"):
            server.connection_requests()


async def test_a_request_dropped_undecided_rejects_the_connection(make_server):
    async with make_server(approve_connections=True) as server:
        requests = server.connection_requests()

        async def drop_one():
            request = await requests.__anext__()
            del request
            gc.collect()  # the request may sit in a reference cycle of the awaitable's machinery

        dropper = asyncio.create_task(drop_one())
        with pytest.raises(echostream.RejectedError, match="did not approve"):
            await echostream.connect(server.address, pin=server.fingerprint, timeout=5)
        await dropper


async def test_undecided_connections_are_closed_after_the_handshake_timeout(make_server):
    async with make_server(approve_connections=1, handshake_timeout=0.5) as server:
        requests = server.connection_requests()
        with pytest.raises(ConnectionError, match="no decision"):
            await echostream.connect(server.address, pin=server.fingerprint, timeout=5)
        del requests


async def test_max_connections_refuses_the_one_over_the_limit(connected, make_server):
    server = make_server(max_connections=1)
    await connected(server)
    with pytest.raises(echostream.RejectedError):
        await echostream.connect(server.address, pin=server.fingerprint, timeout=5)


async def test_call_timeout_is_the_default_deadline_of_calls(connected, make_server):
    server = make_server()

    @server.handler("slow")
    async def slow():
        await asyncio.sleep(30)

    client = await connected(server, call_timeout=0.3)
    with pytest.raises(echostream.TimeoutError, match="slow"):
        await client.request("slow")


async def test_a_reconnecting_client_comes_back_to_a_restarted_server():
    identity = echostream.Identity.persistent("py-reconnect-test")

    def serve(addr):
        server = echostream.Server(addr, identity=identity, shutdown_grace=0.2)

        @server.handler("where")
        def where(ctx):
            return ctx.peer.connection_id

        return server

    first = serve("127.0.0.1:0")
    await first.start()
    addr = first.address
    policy = echostream.Reconnect(initial_backoff=0.05, max_backoff=0.2, wait_for_connection=True)
    client = await echostream.connect(addr, pin=first.fingerprint, reconnect=policy, timeout=2)
    events = client.connection_events()
    try:
        before = client.peer.connection_id
        await client.request("where")
        await first.close()
        gone = await asyncio.wait_for(events.__anext__(), 10)
        assert (gone["event"], gone["connection_id"]) == ("disconnected", before)
        assert gone["reason"]
        async with serve(addr):
            # Waits for the new connection (wait_for_connection), up to the call's timeout.
            await client.request("where", timeout=15)
            assert client.is_connected()
            assert client.peer.connection_id != before
            back = await asyncio.wait_for(events.__anext__(), 10)
            assert (back["event"], back["connection_id"]) == ("connected", client.peer.connection_id)
            await client.close()
            # The end of the last connection, then the end of the events.
            last = await asyncio.wait_for(events.__anext__(), 10)
            assert last["event"] == "disconnected"
            assert [e async for e in events] == []
    finally:
        await client.close()


async def test_without_reconnect_client_events_end_with_the_connection(connected, make_server):
    client = await connected(make_server())
    events = client.connection_events()
    client.peer.close("test: bye")
    got = [e async for e in events]
    assert [e["event"] for e in got] == ["disconnected"]
    assert "test: bye" in got[0]["reason"]


async def test_option_types_are_checked_naming_the_parameter(make_server):
    with pytest.raises(TypeError, match="max_connections"):
        make_server(max_connections="many")
    with pytest.raises(TypeError, match="reconnect"):
        await echostream.connect("127.0.0.1:1", insecure=True, reconnect="yes")
    with pytest.raises(TypeError, match="initial_backoff"):
        echostream.Reconnect(initial_backoff="soon")
    with pytest.raises(ValueError, match="idle_timeout"):
        await echostream.connect("127.0.0.1:1", insecure=True, idle_timeout=-1)
    with pytest.raises(TypeError, match="identity"):
        await echostream.connect("127.0.0.1:1", insecure=True, identity="me")


async def test_a_reconnection_resumes_with_0rtt_and_runs_idempotent_handlers_early(make_server):
    server = make_server(zero_rtt=True)
    ran = []

    @server.handler("lookup", idempotent=True)
    def lookup(key):
        ran.append(key)
        return key.upper()

    async with server:
        client = await echostream.connect(server.address, pin=server.fingerprint, idempotent=["lookup"],
                                          reconnect=echostream.Reconnect(initial_backoff=0.01,
                                                                         wait_for_connection=True), timeout=5)
        try:
            assert client.peer.zero_rtt == "not-attempted"
            assert await client.request("lookup", "a") == "A"
            await eventually(client.can_resume)
            first = client.peer.connection_id
            # The server drops the connection; the client comes back resuming its session.
            for peer in server.peers():
                peer.close("test: come back")
            await eventually(lambda: client.is_connected() and client.peer.connection_id != first)
            assert await client.request("lookup", "b", timeout=10) == "B"
            assert client.peer.zero_rtt == "accepted"
            assert ran == ["a", "b"]
        finally:
            await client.close()


async def test_stream_options_bound_read_to_end_and_unknown_names_are_refused(connected, make_server):
    server = make_server(stream_options={"max_read_to_end": 1000})
    outcome = asyncio.get_running_loop().create_future()

    @server.stream_handler("upload")
    async def upload(stream):
        try:
            await stream.read_to_end()
        except echostream.StreamError as e:
            outcome.set_result(str(e))

    client = await connected(server)
    s = await client.open_stream("upload")
    await s.write_all(b"x" * 5000)
    await s.write_eof()
    assert "1000" in await asyncio.wait_for(outcome, 10)
    with pytest.raises(ValueError, match="unknown option `max_reads`"):
        await make_server(stream_options={"max_reads": 1}).start()
    with pytest.raises(ValueError, match="accept_queue"):
        await echostream.connect("127.0.0.1:1", insecure=True, stream_options={"accept_queue": 0.5})
    with pytest.raises(TypeError, match="stream_options"):
        make_server(stream_options=[("accept_queue", 1)])


async def test_rate_limits_refuse_calls_over_the_limit_naming_the_method(connected, make_server):
    server = make_server(method_rate_limits={"admin.*": 1})

    @server.handler("admin.reset")
    def reset():
        return "done"

    @server.handler("free")
    def free():
        return "ok"

    client = await connected(server)
    assert await client.request("admin.reset") == "done"
    with pytest.raises(echostream.RateLimitedError, match="admin.reset"):
        await client.request("admin.reset")
    # Other names and the connection itself are not affected.
    for _ in range(5):
        assert await client.request("free") == "ok"


async def test_default_handler_timeout_bounds_calls_without_a_deadline(connected, make_server):
    server = make_server(default_handler_timeout=0.3)

    @server.handler("hang")
    async def hang():
        await asyncio.sleep(30)

    # A client whose calls carry no deadline: the server's default bounds the handler.
    client = await connected(server, call_timeout=0)
    with pytest.raises(echostream.TimeoutError, match="hang"):
        await asyncio.wait_for(client.request("hang"), 10)


async def test_a_second_connect_to_the_same_server_resumes_the_session_the_first_received(make_server):
    server = make_server(zero_rtt=True)
    ran = []

    @server.handler("lookup", idempotent=True)
    def lookup(key):
        ran.append(key)
        return key.upper()

    async with server:
        first = await echostream.connect(server.address, pin=server.fingerprint, idempotent=["lookup"])
        try:
            assert first.peer.zero_rtt == "not-attempted"
            assert await first.request("lookup", "a") == "A"
            await eventually(first.can_resume)
        finally:
            await first.close()
        # A connect() of its own (a new client builder in Rust) finds the ticket: 0-RTT.
        second = await echostream.connect(server.address, pin=server.fingerprint, idempotent=["lookup"])
        try:
            assert await second.request("lookup", "b", timeout=10) == "B"
            assert second.peer.zero_rtt == "accepted"
            assert second.info()["zero_rtt"] == "accepted"
        finally:
            await second.close()
        # resumption=False offers no ticket.
        third = await echostream.connect(server.address, pin=server.fingerprint, resumption=False)
        try:
            assert await third.request("lookup", "c") == "C"
            assert third.peer.zero_rtt == "not-attempted"
        finally:
            await third.close()
        # Other trust settings (here another pin list) never get the ticket of the first.
        other = await echostream.connect(server.address, pin=[server.fingerprint, "sha256:" + "00" * 32],
                                         idempotent=["lookup"])
        try:
            assert await other.request("lookup", "d") == "D"
            assert other.peer.zero_rtt == "not-attempted"
        finally:
            await other.close()
    assert ran == ["a", "b", "c", "d"]


async def test_transport_options_by_field_name_reach_both_sides_and_bad_ones_are_named(make_server, connected):
    transport = {"stream_receive_window": 4 << 20, "congestion": "bbr", "keep_alive": None,
                 "call_priority": False, "reordering_threshold": 10, "loss_time_threshold": 1.5}
    server = make_server(transport=transport)
    data = os.urandom(8 << 20)

    @server.stream_handler("echo")
    async def echo(stream):
        await stream.write_all(await stream.read_to_end())
        await stream.write_eof()

    client = await connected(server, transport=transport)
    s = await client.open_stream("echo")
    await s.write_all(data)
    await s.write_eof()
    got = []
    while chunk := await s.read(1 << 22):
        got.append(chunk)
    assert b"".join(got) == data
    with pytest.raises(ValueError, match="unknown option `stream_window`"):
        await echostream.connect("127.0.0.1:1", insecure=True, transport={"stream_window": 1})
    with pytest.raises(ValueError, match="transport `congestion`"):
        await echostream.connect("127.0.0.1:1", insecure=True, transport={"congestion": "vegas"})
    with pytest.raises(ValueError, match="transport `receive_window`"):
        await make_server(transport={"receive_window": 0}).start()
    with pytest.raises(TypeError, match="transport must be a dict"):
        make_server(transport=[("congestion", "bbr")])
