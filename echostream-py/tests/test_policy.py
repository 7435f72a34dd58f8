"""Server policy written in Python: authenticators, interceptors, health statuses, and the event
queue and assembly limits, over QUIC on 127.0.0.1."""

import asyncio

import pytest

import echostream
from conftest import eventually


async def test_a_python_authenticator_names_callers_and_refuses_with_its_reason(make_server, connected):
    seen = []

    async def authenticate(request):
        seen.append(request)
        if request.token == "s3cret":
            return "alice"
        if request.token == "revoked":
            raise ValueError("token `revoked` was revoked yesterday")
        return None

    server = make_server(authenticator=authenticate)

    @server.handler("whoami")
    def whoami(ctx):
        return ctx.identity

    client = await connected(server, token="s3cret", hello={"device": "kitchen"})
    assert await client.request("whoami") == "alice"
    first = seen[0]
    assert first.remote.startswith("127.0.0.1:")
    assert first.metadata["device"] == "kitchen"
    assert first.fingerprint is None
    assert "s3cret" not in repr(first)
    with pytest.raises(echostream.RejectedError, match="revoked yesterday"):
        await echostream.connect(server.address, pin=server.fingerprint, token="revoked", timeout=5)
    with pytest.raises(echostream.RejectedError, match="rejected by the authenticator"):
        await echostream.connect(server.address, pin=server.fingerprint, timeout=5)
    # Still serving the client it admitted.
    assert await client.request("whoami") == "alice"


async def test_a_slow_authenticator_holds_back_only_the_client_it_is_deciding(make_server, connected):
    gate = asyncio.Event()

    async def authenticate(request):
        if request.token == "slow":
            await gate.wait()
        return request.token

    server = make_server(authenticator=authenticate)

    @server.handler("whoami")
    def whoami(ctx):
        return ctx.identity

    fast = await connected(server, token="fast")
    slow = asyncio.ensure_future(echostream.connect(server.address, pin=server.fingerprint, token="slow", timeout=10))
    await asyncio.sleep(0.2)
    assert not slow.done(), "the slow client waits for its decision"
    # Meanwhile the other connection's calls run.
    for _ in range(20):
        assert await fast.request("whoami") == "fast"
    gate.set()
    client = await asyncio.wait_for(slow, 10)
    try:
        assert await client.request("whoami") == "slow"
    finally:
        await client.close()


async def test_a_plain_function_authenticator_works_and_bad_arguments_are_refused(make_server, connected):
    server = make_server(authenticator=lambda request: "bob" if request.token == "b" else None)

    @server.handler("whoami")
    def whoami(ctx):
        return ctx.identity

    client = await connected(server, token="b")
    assert await client.request("whoami") == "bob"
    with pytest.raises(TypeError, match="authenticator must be callable"):
        make_server(authenticator="bob")
    with pytest.raises(ValueError, match="tokens/require_token or an authenticator"):
        await make_server(authenticator=lambda r: "x", tokens={"t": "u"}).start()


async def test_interceptors_see_every_kind_of_call_in_order_and_deny_before_the_handler_runs(make_server, connected):
    order = []
    ran = []

    def log(ctx, kind):
        order.append(("log", ctx.method, kind))

    async def admin_only(ctx, kind):
        order.append(("admin_only", ctx.method, kind))
        if ctx.method.startswith("admin."):
            return False
        if ctx.method == "secret":
            raise echostream.RemoteError(1234, "not with this client")
        return None

    server = make_server(interceptor=[log, admin_only])

    @server.handler("math.add")
    def add(a, b):
        ran.append("math.add")
        return a + b

    @server.handler("admin.reset")
    def reset():
        ran.append("admin.reset")

    @server.handler("secret")
    def secret():
        ran.append("secret")

    got = asyncio.get_running_loop().create_future()

    @server.listener("note")
    def note(value):
        got.set_result(value)

    @server.stream_handler("upload")
    async def upload(stream):
        await stream.write_all(await stream.read_to_end())
        await stream.write_eof()

    client = await connected(server)
    assert await client.request("math.add", 2, 3) == 5
    with pytest.raises(echostream.PermissionDeniedError, match="admin.reset"):
        await client.request("admin.reset")
    with pytest.raises(echostream.RemoteError) as e:
        await client.request("secret")
    assert e.value.code == 1234
    await client.emit("note", "hi")
    assert await asyncio.wait_for(got, 10) == "hi"
    s = await client.open_stream("upload")
    await s.write_all(b"abc")
    await s.write_eof()
    assert await s.read_to_end() == b"abc"
    assert ran == ["math.add"]
    assert order[:4] == [("log", "math.add", "request"), ("admin_only", "math.add", "request"),
                         ("log", "admin.reset", "request"), ("admin_only", "admin.reset", "request")]
    assert ("admin_only", "note", "event") in order
    assert ("admin_only", "upload", "stream") in order


async def test_a_client_interceptor_guards_what_the_server_asks_of_it(make_server, connected):
    server = make_server()
    router = echostream.Router()

    @router.handler("client.name")
    def name():
        return "c1"

    @router.handler("client.wipe")
    def wipe():
        return "wiped"

    @server.handler("ask")
    async def ask(ctx, method):
        try:
            return await ctx.peer.request(method)
        except echostream.PermissionDeniedError as e:
            return f"denied: {e}"

    client = await connected(server, router=router, interceptor=lambda ctx, kind: ctx.method != "client.wipe")
    assert await client.request("ask", "client.name") == "c1"
    answer = await client.request("ask", "client.wipe")
    assert answer.startswith("denied:") and "client.wipe" in answer


async def test_health_statuses_set_in_python_are_what_clients_read(make_server, connected):
    server = make_server()
    client = await connected(server)
    assert server.health() == "SERVING"
    assert server.health("math") == "SERVICE_UNKNOWN"
    assert await client.health("math") == "SERVICE_UNKNOWN"
    server.set_not_serving("math")
    assert server.health("math") == "NOT_SERVING"
    assert await client.health("math") == "NOT_SERVING"
    assert await client.health() == "SERVING"
    server.set_serving("math")
    assert await client.health("math") == "SERVING"
    server.set_not_serving()
    assert await client.health() == "NOT_SERVING"
    with pytest.raises(TypeError, match="service must be a str"):
        server.set_serving(1)


async def test_the_event_queue_holds_back_a_sender_whose_events_wait_for_a_listener(make_server, connected):
    server = make_server(event_queue=2)
    gate = asyncio.Event()
    seen = []

    @server.listener("tick")
    async def tick(n):
        seen.append(n)
        await gate.wait()

    client = await connected(server)
    await client.emit("tick", 1)
    await client.emit("tick", 2)
    third = asyncio.ensure_future(client.emit("tick", 3))
    await asyncio.sleep(0.3)
    assert not third.done(), "the server holds 2 events: the third emit waits for credit"
    gate.set()
    await asyncio.wait_for(third, 10)
    await eventually(lambda: seen == [1, 2, 3])


async def test_limit_options_are_checked_and_reach_both_sides(make_server, connected):
    server = make_server(assembly_timeout=5, max_assembly_bytes=1 << 20, event_queue=64)

    @server.handler("echo")
    def echo(value):
        return value

    client = await connected(server, assembly_timeout=5, max_assembly_bytes=1 << 20, event_queue=64)
    big = "x" * (3 << 20)
    assert await client.request("echo", big, timeout=30) == big
    with pytest.raises(ValueError, match="event_queue=0"):
        await make_server(event_queue=0).start()
    with pytest.raises(ValueError, match="max_assembly_bytes=0"):
        await echostream.connect("127.0.0.1:1", insecure=True, max_assembly_bytes=0)
    with pytest.raises(ValueError, match="assembly_timeout"):
        await echostream.connect("127.0.0.1:1", insecure=True, assembly_timeout=-1)
    with pytest.raises(TypeError, match="event_queue"):
        make_server(event_queue="many")
