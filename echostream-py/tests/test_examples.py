"""The Python examples, run as programs against each other on 127.0.0.1."""

import asyncio
import os
import pathlib
import sys

EXAMPLES = pathlib.Path(__file__).resolve().parents[1] / "examples"


async def start(*args):
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-u", *map(str, args),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    return proc


async def first_words(proc):
    line = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode()
    return line.split()


async def stop(proc):
    if proc.returncode is None:
        proc.stdin.close()
        try:
            await asyncio.wait_for(proc.wait(), 10)
        except asyncio.TimeoutError:
            proc.kill()
            await proc.wait()
    return (await proc.stdout.read()).decode()


async def test_send_file(tmp_path):
    receiver = await start(EXAMPLES / "send_file.py", "receive", "--bind", "127.0.0.1:0", "--dir", tmp_path / "in")
    try:
        addr, fp = await first_words(receiver)
        data = os.urandom(3 * (1 << 20) + 17)
        src = tmp_path / "blob.bin"
        src.write_bytes(data)
        sender = await start(EXAMPLES / "send_file.py", "send", addr, fp, src)
        out, err = await asyncio.wait_for(sender.communicate(), 60)
        assert sender.returncode == 0, err.decode()
        assert "matches" in out.decode()
        assert (tmp_path / "in" / "blob.bin").read_bytes() == data
    finally:
        receiver.kill()
        await receiver.wait()


async def test_interactive_nodes_talk(tmp_path):
    a = await start(EXAMPLES / "interactive_node.py", "--name", "node-a")
    try:
        words = await first_words(a)
        addr, fp = words[3], words[5]
        b = await start(EXAMPLES / "interactive_node.py", "--name", "node-b")
        await first_words(b)
        commands = [
            f"connect {addr} {fp}",
            "call add 2 3",
            "call whoami",
            "call fail '\"no\"'",
            "call missing",
            "stream hello there",
            "refuse",
            "emit note '\"hi a\"'",
            "ping",
            "quit",
        ]
        out, err = await asyncio.wait_for(b.communicate(("\n".join(commands) + "\n").encode()), 60)
        out = out.decode()
        assert b.returncode == 0, err.decode()
        assert "connected to" in out
        assert "\n5\n" in out
        assert '"node": "node-a"' in out
        assert "error: RemoteError" in out and "no" in out
        assert "error: UnknownMethodError" in out and "`missing`" in out
        assert "HELLO THERE" in out
        assert "error half: this node refuses" in out
        assert " ms" in out
    finally:
        a_out = await stop(a)
    assert "[connected]" in a_out
    assert 'note "hi a"' in a_out


async def test_chat(tmp_path):
    server = await start(EXAMPLES / "chat.py", "serve", "--bind", "127.0.0.1:0")
    try:
        addr, fp = await first_words(server)
        client = await start(EXAMPLES / "chat.py", "join", addr, fp, "ada")
        client.stdin.write(b"hello room\n")
        await client.stdin.drain()
        seen = []
        while not any("<ada> hello room" in line for line in seen):
            line = await asyncio.wait_for(client.stdout.readline(), 30)
            assert line, f"chat client ended early: {seen}"
            seen.append(line.decode())
        client.stdin.write(b"/who\n")
        await client.stdin.drain()
        while not any(line.strip() == "ada" for line in seen):
            line = await asyncio.wait_for(client.stdout.readline(), 30)
            assert line, f"chat client ended early: {seen}"
            seen.append(line.decode())
        client.stdin.close()
        assert await asyncio.wait_for(client.wait(), 10) == 0
    finally:
        server.kill()
        await server.wait()
