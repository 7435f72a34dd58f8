"""XStreams between a Python client and a Python server."""

import asyncio
import hashlib
import os

import pytest

import echostream


async def test_stream_handler_echo_and_state(make_server, connected):
    server = make_server()

    @server.stream_handler("echo")
    async def echo(ctx, stream):
        assert ctx.method == "echo"
        data = await stream.read_to_end()
        await stream.write_all(data[::-1])
        await stream.write_eof()

    client = await connected(server)
    s = await client.open_stream("echo", metadata={"k": "v"})
    assert s.state == "open"
    assert s.name == "echo"
    await s.write_all(memoryview(b"xhello")[1:])
    await s.write(bytearray(b" world"))
    await s.flush()
    await s.write_eof()
    assert s.state == "write-closed"
    assert await s.read_exact(3) == b"dlr"
    assert await s.read_to_end() == b"ow olleh"
    # Both directions ended: the stream is closed, and says so to a further read.
    assert s.state == "closed"
    with pytest.raises(echostream.StreamError, match="closed"):
        await s.read(10)
    await s.close()


async def test_accept_iterator_and_metadata(make_server, connected):
    server = make_server()
    await server.start()
    client = await connected(server)

    # Streams are taken from the moment accept() is called.
    incoming = server.accept("raw")

    async def serve_one():
        async for peer, stream in incoming:
            assert isinstance(peer, echostream.Peer)
            assert stream.metadata == [("who", "me")]
            await stream.write_all(await stream.read_to_end() + b"!")
            await stream.write_eof()
            return

    task = asyncio.ensure_future(serve_one())
    s = await client.open_stream("raw", metadata={"who": "me"})
    await s.write_all(b"hi")
    await s.write_eof()
    assert await s.read_to_end() == b"hi!"
    await asyncio.wait_for(task, 5)


async def test_64_mib_with_sha256(make_server, connected):
    server = make_server()

    @server.stream_handler("upload")
    async def upload(stream):
        h = hashlib.sha256()
        total = 0
        while True:
            chunk = await stream.read(1 << 20)
            if not chunk:
                break
            h.update(chunk)
            total += len(chunk)
        await stream.write_all(f"{total} {h.hexdigest()}".encode())
        await stream.write_eof()

    client = await connected(server)
    s = await client.open_stream("upload")
    piece = os.urandom(1 << 20)
    h = hashlib.sha256()
    for i in range(64):
        block = bytes([i]) + piece[1:]
        h.update(block)
        await s.write_all(block)
    await s.write_eof()
    answer = (await asyncio.wait_for(s.read_to_end(), 120)).decode()
    assert answer == f"{64 << 20} {h.hexdigest()}"


async def test_error_half(make_server, connected):
    server = make_server()

    @server.stream_handler("refuse")
    async def refuse(stream):
        await stream.write_all(b"partial")
        await stream.error_write(b"disk full", with_data_flush=True)

    @server.stream_handler("raises")
    async def raises(stream):
        raise echostream.RemoteError(1007, "not today")

    client = await connected(server)
    s = await client.open_stream("refuse")
    assert await s.read_exact(7) == b"partial"
    assert await s.error_read() == b"disk full"
    with pytest.raises(echostream.StreamError):
        await s.read_to_end()

    s = await client.open_stream("raises")
    err = await asyncio.wait_for(s.error_read(), 5)
    assert b"not today" in err


async def test_unknown_stream_name_is_refused(make_server, connected):
    server = make_server()
    await server.start()
    client = await connected(server)
    with pytest.raises(echostream.StreamError, match="nobody"):
        s = await client.open_stream("nobody")
        await s.read_to_end()


async def test_cancelled_read_leaves_the_stream_usable(make_server, connected):
    server = make_server()
    go = asyncio.Event()

    @server.stream_handler("later")
    async def later(stream):
        await go.wait()
        await stream.write_all(b"now")
        await stream.write_eof()

    client = await connected(server)
    s = await client.open_stream("later")
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(s.read(10), 0.2)
    go.set()
    assert await asyncio.wait_for(s.read_to_end(), 5) == b"now"


async def test_message_streams_carry_json_values(make_server, connected):
    server = make_server()

    @server.stream_handler("sum")
    async def summing(stream):
        messages = echostream.MessageStream(stream)
        total = 0
        async for value in messages:
            total += value["n"]
            await messages.send({"running": total})
        await messages.send(None)
        await messages.finish()

    client = await connected(server)
    m = await client.open_message_stream("sum")
    got = []
    for n in (1, 2, 3):
        await m.send({"n": n})
        got.append(await m.recv())
    await m.finish()
    # A JSON null is a message like any other; the end is EOFError.
    assert await m.recv() is None
    with pytest.raises(EOFError):
        await m.recv()
    assert got == [{"running": 1}, {"running": 3}, {"running": 6}]
    with pytest.raises(TypeError, match="set"):
        await m.send({1})


async def test_a_stream_turned_into_messages_has_no_byte_operations(make_server, connected):
    server = make_server()

    @server.stream_handler("sink")
    async def sink(stream):
        await stream.read_to_end()

    client = await connected(server)
    s = await client.open_stream("sink")
    echostream.MessageStream(s)
    with pytest.raises(RuntimeError, match="message stream"):
        await s.write_all(b"x")
    with pytest.raises(RuntimeError, match="already a message stream"):
        echostream.MessageStream(s)


async def test_reads_of_changing_sizes_return_every_byte_and_then_the_end(make_server, connected):
    server = make_server()
    data = os.urandom(3 * (1 << 20) + 11)

    @server.stream_handler("source")
    async def source(stream):
        await stream.write_all(data)
        await stream.write_eof()

    client = await connected(server)
    s = await client.open_stream("source")
    await asyncio.sleep(0.2)  # let much of it arrive, so reads find it waiting
    sizes = [1 << 20, 5, 70000, 1, 1 << 20, 1500]
    got, largest, i = [], 0, 0
    while True:
        n = sizes[i % len(sizes)]
        chunk = await asyncio.wait_for(s.read(n), 10)
        assert len(chunk) <= n
        if not chunk:
            break
        largest = max(largest, len(chunk))
        got.append(chunk)
        i += 1
    assert b"".join(got) == data
    assert largest > 64 * 1024, f"a large read takes what has arrived (largest: {largest})"
    # The end was reported once, as b""; a read after it says the data half is closed.
    with pytest.raises(echostream.StreamError, match="read"):
        await s.read(10)
