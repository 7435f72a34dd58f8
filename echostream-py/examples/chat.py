"""A chat room: one server, any number of clients.

    python chat.py serve [--bind 127.0.0.1:5002]      # prints its address and fingerprint
    python chat.py join ADDRESS FINGERPRINT NAME      # type lines; Ctrl-D or Ctrl-C to leave

Clients send ``chat.say`` events; the server broadcasts ``chat.message`` to everyone and
``chat.who`` answers the names present. A client's Ctrl-C cancels its pending awaits cleanly.
"""

import argparse
import asyncio
import sys

import echostream


async def serve(bind: str) -> None:
    server = echostream.Server(bind, identity=echostream.Identity.ephemeral())
    names = {}

    @server.handler("chat.join")
    async def join(ctx, name):
        names[ctx.peer_address] = str(name)[:32]
        await server.broadcast("chat.message", {"from": "*", "text": f"{name} joined"})
        return sorted(names.values())

    @server.handler("chat.who")
    def who():
        return sorted(names.values())

    @server.listener("chat.say")
    async def say(ctx, text):
        sender = names.get(ctx.peer_address, ctx.peer_address)
        await server.broadcast("chat.message", {"from": sender, "text": str(text)[:1000]})

    async with server:
        print(f"{server.address} {server.fingerprint}", flush=True)
        async for event in server.connection_events():
            if event["event"] == "disconnected":
                gone = names.pop(event["remote"], None)
                if gone:
                    await server.broadcast("chat.message", {"from": "*", "text": f"{gone} left"})


async def join(addr: str, pin: str, name: str) -> None:
    async with await echostream.connect(addr, pin=pin) as client:
        messages = client.subscribe("chat.message")
        present = await client.request("chat.join", name)
        print(f"in the room: {', '.join(present)}")

        async def show():
            async for m in messages:
                print(f"<{m['from']}> {m['text']}", flush=True)

        shower = asyncio.ensure_future(show())
        loop = asyncio.get_running_loop()
        try:
            while True:
                line = await loop.run_in_executor(None, sys.stdin.readline)
                if not line:
                    break
                if line.strip() == "/who":
                    print(", ".join(await client.request("chat.who")))
                elif line.strip():
                    await client.emit("chat.say", line.rstrip("\n"))
        finally:
            shower.cancel()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve")
    s.add_argument("--bind", default="127.0.0.1:5002")
    j = sub.add_parser("join")
    j.add_argument("address")
    j.add_argument("fingerprint")
    j.add_argument("name")
    a = p.parse_args()
    try:
        if a.cmd == "serve":
            asyncio.run(serve(a.bind))
        else:
            asyncio.run(join(a.address, a.fingerprint, a.name))
    except KeyboardInterrupt:
        return 130
    except echostream.EchoStreamError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
