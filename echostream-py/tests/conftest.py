"""Fixtures: servers on 127.0.0.1 with ephemeral identities, and a private ECHOSTREAM_HOME."""

import os
import tempfile

import pytest

import echostream

# Identities and known-hosts files written by the tests stay out of the real home.
os.environ.setdefault("ECHOSTREAM_HOME", tempfile.mkdtemp(prefix="echostream-py-tests-"))


@pytest.fixture
def make_server():
    """A factory of servers (not started) bound to an ephemeral port on 127.0.0.1."""

    def make(**kwargs):
        return echostream.Server("127.0.0.1:0", identity=echostream.Identity.ephemeral(), **kwargs)

    return make


@pytest.fixture
async def connected(make_server):
    """Starts ``server`` and connects a pinned client; closes both afterwards."""
    opened = []

    async def connect(server, **kwargs):
        if server._native is None:
            await server.start()
            opened.append(server)
        client = await echostream.connect(server.address, pin=server.fingerprint, **kwargs)
        opened.append(client)
        return client

    yield connect
    for thing in reversed(opened):
        await thing.close()


async def eventually(predicate, timeout=5.0):
    """Waits until ``predicate()`` is truthy (the server lists a connection a moment after the
    client's handshake completes); returns its value."""
    import asyncio

    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        await asyncio.sleep(0.005)
