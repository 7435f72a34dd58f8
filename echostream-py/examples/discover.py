"""Find a server on the LAN by its service name (mDNS) and call it.

    python discover.py announce AudioService   # a server announcing AudioService
    python discover.py find AudioService       # finds it, pins the announced fingerprint, calls it

mDNS reaches every host on the LAN: run it on a network you may announce on (the project's
tests run it only inside network namespaces they create).
"""

import argparse
import asyncio
import sys

import echostream


async def announce(name: str, bind: str) -> None:
    server = echostream.Server(bind, identity=echostream.Identity.persistent(f"py-{name}"), discovery=name)

    @server.handler("whoami")
    def whoami(ctx):
        return {"you": ctx.peer_address, "service": name}

    async with server:
        print(f"announcing {name} at {server.address} ({server.fingerprint})", flush=True)
        async for event in server.connection_events():
            print(f"{event['event']}: {event['remote']}", flush=True)


async def find(name: str, timeout: float) -> None:
    async with await echostream.discover(name, timeout=timeout) as client:
        print(f"found {name} at {client.remote_address} ({client.server_fingerprint})")
        print(await client.request("whoami"))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("mode", choices=["announce", "find"])
    p.add_argument("name")
    p.add_argument("--bind", default="0.0.0.0:0")
    p.add_argument("--timeout", type=float, default=3.0)
    a = p.parse_args()
    try:
        if a.mode == "announce":
            asyncio.run(announce(a.name, a.bind))
        else:
            asyncio.run(find(a.name, a.timeout))
    except KeyboardInterrupt:
        return 130
    except echostream.DiscoveryTimeoutError as e:
        print(f"not found: {e}", file=sys.stderr)
        return 1
    except echostream.EchoStreamError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
