"""The inner run of test_discovery.py: only ever started inside a fresh network namespace.

Refuses to run mDNS unless this process's network namespace differs from the one named by
ECHOSTREAM_OUTER_NETNS (the namespace of the pytest run that started it).
"""

import asyncio
import os
import sys

import echostream


def assert_isolated() -> None:
    outer = os.environ.get("ECHOSTREAM_OUTER_NETNS")
    inner = os.readlink("/proc/self/ns/net")
    if not outer or outer == inner:
        sys.exit(f"refusing to run mDNS: not in a network namespace of its own ({inner})")


async def main() -> None:
    server = echostream.Server(
        "127.0.0.1:0",
        identity=echostream.Identity.ephemeral(),
        discovery="PyAudioService",
        discovery_interfaces="loopback",
    )

    @server.handler("whoami")
    def whoami(ctx):
        return ctx.peer_address

    async with server:
        # The announced fingerprint is pinned: no trust argument needed.
        client = await echostream.discover("PyAudioService", timeout=10, interfaces="loopback")
        assert client.server_fingerprint == server.fingerprint, client.server_fingerprint
        assert client.remote_address == server.address, client.remote_address
        assert (await client.request("whoami")).startswith("127.0.0.1:")
        await client.close()
        try:
            await echostream.discover("NoSuchService", timeout=1.5, interfaces="loopback")
        except echostream.DiscoveryTimeoutError as e:
            assert isinstance(e, TimeoutError)
            assert "NoSuchService" in str(e), str(e)
        else:
            raise AssertionError("found a service nobody announced")
    print("discovery ok")


if __name__ == "__main__":
    assert_isolated()
    asyncio.run(main())
