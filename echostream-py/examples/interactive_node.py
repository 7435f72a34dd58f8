"""An EchoStream node you drive by typed commands: it serves, connects to another node, calls,
emits, opens XStreams, and shows connection events and errors as they happen.

    python interactive_node.py [--bind 127.0.0.1:0] [--name node]   # prints its address and fingerprint

Commands (one per line; JSON values, several travel as an array):

    connect ADDRESS [FINGERPRINT]   connect to another node (without a fingerprint: trust on
                                    first use, recorded in the known-hosts file)
    call METHOD [JSON ...]          a request, e.g.  call echo {"a": 1}   or   call add 2 3
    emit EVENT JSON                 a one-way event, e.g.  emit note "hello"
    stream TEXT                     XStream `upper`: sends TEXT, prints what comes back
    refuse                          XStream `refuse`: shows the error half
    ping | info | clock | peers     round trip, connection details, synced clock, our clients
    close                           close the connection made by `connect`
    quit

Two terminals: start one node, then start another and type the first one's
``connect ADDRESS FINGERPRINT`` line, then ``call whoami``.
"""

import argparse
import asyncio
import json
import shlex
import sys
from typing import List, Optional

import echostream


def make_node(bind: str, name: str) -> echostream.Server:
    node = echostream.Server(bind, identity=echostream.Identity.persistent(name))

    @node.handler("echo")
    def echo(value=None):
        return value

    @node.handler("add")
    def add(*numbers):
        return sum(numbers)

    @node.handler("whoami")
    def whoami(ctx):
        return {"you": ctx.peer_address, "node": name, "metadata": ctx.metadata}

    @node.handler("fail")
    def fail(message="failing on purpose"):
        raise echostream.RemoteError(1001, str(message))

    @node.listener("note")
    def note(ctx, value):
        print(f"\n[event from {ctx.peer_address}] note {json.dumps(value)}", flush=True)

    @node.stream_handler("upper")
    async def upper(stream):
        data = await stream.read_to_end()
        await stream.write_all(data.upper())
        await stream.write_eof()

    @node.stream_handler("refuse")
    async def refuse(stream):
        await stream.error_write(b"this node refuses `refuse` streams")

    return node


class Shell:
    def __init__(self, node: echostream.Server) -> None:
        self.node = node
        self.client: Optional[echostream.Client] = None

    def need_client(self) -> echostream.Client:
        if self.client is None:
            raise ValueError("not connected: `connect ADDRESS [FINGERPRINT]` first")
        return self.client

    async def run(self, words: List[str]) -> bool:
        cmd, args = words[0], words[1:]
        if cmd == "quit":
            return False
        if cmd == "connect":
            if self.client is not None:
                await self.client.close()
            pin = args[1] if len(args) > 1 else None
            self.client = await echostream.connect(args[0], pin=pin, timeout=5)
            print(f"connected to {self.client.remote_address} ({self.client.server_fingerprint})")
        elif cmd == "call":
            values = [json.loads(a) for a in args[1:]]
            print(json.dumps(await self.need_client().request(args[0], *values, timeout=10)))
        elif cmd == "emit":
            await self.need_client().emit(args[0], json.loads(args[1]) if len(args) > 1 else None)
            print("sent")
        elif cmd == "stream":
            s = await self.need_client().open_stream("upper")
            await s.write_all(" ".join(args).encode())
            await s.write_eof()
            print((await s.read_to_end()).decode())
        elif cmd == "refuse":
            s = await self.need_client().open_stream("refuse")
            print(f"error half: {(await s.error_read()).decode()}")
        elif cmd == "ping":
            print(f"{await self.need_client().ping() * 1e3:.3f} ms")
        elif cmd == "info":
            print(json.dumps(self.need_client().info(), indent=2))
        elif cmd == "clock":
            clock = self.need_client().clock()
            await clock.synced(samples=4, timeout=5)
            print(f"offset {clock.offset_nanos()} ns, rtt {clock.rtt()} s, error bound {clock.error_bound()} s")
        elif cmd == "peers":
            for p in self.node.peers():
                print(f"{p.address} #{p.connection_id} {p.fingerprint or ''}")
        elif cmd == "close":
            await self.need_client().close()
            self.client = None
        else:
            print(f"unknown command `{cmd}` (see the list at the top of this file)")
        return True


async def main(bind: str, name: str) -> None:
    node = make_node(bind, name)
    async with node:
        print(f"node {name} at {node.address} fingerprint {node.fingerprint}", flush=True)
        print(f"others connect with:  connect {node.address} {node.fingerprint}", flush=True)

        async def show_events():
            async for e in node.connection_events():
                print(f"\n[{e['event']}] {e['remote']} {e.get('reason') or ''}".rstrip(), flush=True)

        events = asyncio.ensure_future(show_events())
        shell = Shell(node)
        loop = asyncio.get_running_loop()
        try:
            while True:
                line = await loop.run_in_executor(None, sys.stdin.readline)
                if not line:
                    break
                try:
                    words = shlex.split(line)
                except ValueError as e:
                    print(f"error: {e}")
                    continue
                if not words:
                    continue
                try:
                    if not await shell.run(words):
                        break
                except echostream.EchoStreamError as e:
                    print(f"error: {type(e).__name__}: {e}", flush=True)
                except (ValueError, TypeError, IndexError) as e:
                    print(f"error: {type(e).__name__}: {e}", flush=True)
                sys.stdout.flush()
        finally:
            events.cancel()
            if shell.client is not None:
                await shell.client.close()


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bind", default="127.0.0.1:0")
    p.add_argument("--name", default="py-node")
    a = p.parse_args()
    try:
        asyncio.run(main(a.bind, a.name))
    except KeyboardInterrupt:
        sys.exit(130)
