"""Server identities and client trust modes from Python."""

import pathlib

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


# A CA, a server certificate it issued for 127.0.0.1 and localhost, a client certificate it
# issued, and a client certificate from another CA: PEM files made by pki/gen.sh.
PKI = pathlib.Path(__file__).with_name("pki")
CA = str(PKI / "ca.pem")
SERVER = (str(PKI / "server.pem"), str(PKI / "server-key.pem"))
CLIENT = (str(PKI / "client.pem"), str(PKI / "client-key.pem"))
ROGUE = (str(PKI / "rogue.pem"), str(PKI / "rogue-key.pem"))


def ca_server(**kwargs):
    server = echostream.Server("127.0.0.1:0", identity=echostream.Identity.pem(*SERVER), **kwargs)

    @server.handler("whoami")
    def whoami(ctx):
        return {"fingerprint": ctx.fingerprint, "identity": ctx.identity}

    return server


async def test_a_ca_issued_server_certificate_is_trusted_through_ca_and_checked_by_name():
    async with ca_server() as server:
        port = server.address.rsplit(":", 1)[1]
        # The name checked is the host of the address (127.0.0.1, in the certificate)...
        async with await echostream.connect(server.address, ca=CA, timeout=5) as client:
            assert client.server_fingerprint == server.fingerprint
            assert await client.request("whoami") == {"fingerprint": None, "identity": None}
        # ...or server_name, when given.
        client = await echostream.connect(f"127.0.0.1:{port}", ca=CA, server_name="localhost", timeout=5)
        await client.close()
        # A name the certificate does not carry is refused.
        with pytest.raises(echostream.TrustError):
            await echostream.connect(server.address, ca=CA, server_name="other.example", timeout=5)
        # Another CA does not vouch for it.
        with pytest.raises(echostream.TrustError):
            await echostream.connect(server.address, ca=str(PKI / "rogue-ca.pem"), timeout=5)


async def test_a_ca_refuses_a_self_signed_server_and_names_the_address():
    server = echostream.Server("127.0.0.1:0", identity=echostream.Identity.ephemeral())
    async with server:
        with pytest.raises(echostream.TrustError, match=server.address):
            await echostream.connect(server.address, ca=CA, timeout=5)


async def test_mutual_tls_with_a_ca_admits_its_clients_and_refuses_others_with_the_reason():
    async with ca_server(client_auth=echostream.ClientAuth.required(ca=CA)) as server:
        cert, key = CLIENT
        async with await echostream.connect(server.address, ca=CA, cert=cert, key=key, timeout=5) as client:
            seen = await client.request("whoami")
        # The handler sees the client certificate's fingerprint; the identity comes from its name.
        assert len(seen["fingerprint"]) == 64
        assert seen["identity"] == "py-device"
        # Without a certificate: refused, and the error says why.
        with pytest.raises(echostream.RejectedError, match="client certificate") as refused:
            await echostream.connect(server.address, ca=CA, timeout=5)
        assert isinstance(refused.value, ConnectionError)
        # A certificate another CA issued: refused too.
        with pytest.raises(echostream.RejectedError, match="client certificate"):
            await echostream.connect(server.address, ca=CA, cert=ROGUE[0], key=ROGUE[1], timeout=5)


async def test_mutual_tls_with_pinned_client_identities():
    device = echostream.Identity.persistent("py-device-test")
    fp = device.fingerprint()
    assert len(fp) == 64 and fp == device.fingerprint()
    stranger = echostream.Identity.persistent("py-stranger-test")
    server = echostream.Server("127.0.0.1:0", identity=echostream.Identity.ephemeral(),
                               client_auth=echostream.ClientAuth.required(pins=[fp]))

    @server.handler("whoami")
    def whoami(ctx):
        return ctx.fingerprint

    async with server:
        async with await echostream.connect(server.address, pin=server.fingerprint, identity=device,
                                            timeout=5) as client:
            assert await client.request("whoami") == fp
        with pytest.raises(echostream.RejectedError, match="client certificate"):
            await echostream.connect(server.address, pin=server.fingerprint, identity=stranger, timeout=5)
        with pytest.raises(echostream.RejectedError, match="client certificate"):
            await echostream.connect(server.address, pin=server.fingerprint, timeout=5)


async def test_pem_identity_fingerprints_match_what_the_peer_sees():
    cert, key = CLIENT
    async with ca_server(client_auth=echostream.ClientAuth.optional(ca=CA)) as server:
        assert echostream.Identity.pem(*SERVER).fingerprint() == server.fingerprint
        async with await echostream.connect(server.address, ca=CA, identity=echostream.Identity.pem(cert, key),
                                            timeout=5) as client:
            seen = await client.request("whoami")
        assert seen["fingerprint"] == echostream.Identity.pem(cert, key).fingerprint()
        # Optional: a client without a certificate is admitted, anonymously.
        async with await echostream.connect(server.address, ca=CA, timeout=5) as client:
            assert await client.request("whoami") == {"fingerprint": None, "identity": None}
    with pytest.raises(ValueError, match="ephemeral"):
        echostream.Identity.ephemeral().fingerprint()
    with pytest.raises(echostream.EchoStreamError, match="nope.pem"):
        echostream.Identity.pem("nope.pem", key).fingerprint()


async def test_client_auth_arguments_are_checked_before_anything_starts():
    with pytest.raises(TypeError, match="ca= .* or pins="):
        echostream.ClientAuth.required()
    with pytest.raises(TypeError, match="ca= .* or pins="):
        echostream.ClientAuth.required(ca=CA, pins=["sha256:00"])
    with pytest.raises(TypeError, match="client_auth"):
        echostream.Server("127.0.0.1:0", client_auth="required")
    server = echostream.Server("127.0.0.1:0", identity=echostream.Identity.ephemeral(),
                               client_auth=echostream.ClientAuth.required(pins=["not-a-fingerprint"]))
    with pytest.raises(ValueError, match="not-a-fingerprint"):
        await server.start()
    with pytest.raises(ValueError, match="cert and key go together"):
        await echostream.connect("127.0.0.1:1", insecure=True, cert=CLIENT[0])


async def test_0rtt_and_client_certificates_together_are_refused_at_start():
    server = ca_server(zero_rtt=True, client_auth=echostream.ClientAuth.required(ca=CA))
    with pytest.raises(echostream.ConfigError, match="0-RTT"):
        await server.start()
