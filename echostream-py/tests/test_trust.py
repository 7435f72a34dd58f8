"""Server identities and client trust modes from Python."""

import pytest

import echostream


async def test_persistent_identity_keeps_its_fingerprint():
    prints = []
    for _ in range(2):
        server = echostream.Server("127.0.0.1:0", identity=echostream.Identity.persistent("py-trust-test"))
        async with server:
            prints.append(server.fingerprint)
    assert prints[0] == prints[1]
    other = echostream.Server("127.0.0.1:0", identity=echostream.Identity.ephemeral())
    async with other:
        assert other.fingerprint != prints[0]


async def test_known_hosts_trusts_on_first_use_and_refuses_a_changed_key(tmp_path):
    known = str(tmp_path / "known_hosts")
    first = echostream.Server("127.0.0.1:0", identity=echostream.Identity.ephemeral())
    async with first:
        addr = first.address
        client = await echostream.connect(addr, known_hosts=known, timeout=5)
        assert client.server_fingerprint == first.fingerprint
        await client.close()
        # Known now: a second connection is trusted without asking.
        client = await echostream.connect(addr, known_hosts=known, timeout=5)
        await client.close()
    # Another key at the same address is refused, naming the address.
    second = echostream.Server(addr, identity=echostream.Identity.ephemeral())
    async with second:
        with pytest.raises(echostream.TrustError, match=addr):
            await echostream.connect(addr, known_hosts=known, timeout=5)


async def test_missing_pem_files_fail_naming_them(tmp_path):
    missing = str(tmp_path / "nope.pem")
    server = echostream.Server("127.0.0.1:0", identity=echostream.Identity.pem(missing, missing))
    with pytest.raises(echostream.EchoStreamError, match="nope.pem"):
        await server.start()
