"""EchoStream vs grpcio (asyncio API, generic bytes handlers) vs pyzmq (asyncio, DEALER/ROUTER)
from Python, in one run on one machine: each server runs in a process of its own, the client in
this one.

    pip install ./echostream-py "grpcio==1.85.*" "pyzmq==27.*"
    cargo build --release --example py_interop      # optional: the Rust-client stream rows
    python echostream-py/bench/bench.py [--calls 3000] [--seconds 3] [--stream-mib 256] \\
        [--rust-client target/release/examples/py_interop]

Cases: 64-byte calls one after another (p50, p99 latency), 64 callers at once (calls/s), and one
stream of --stream-mib MiB in 1 MiB writes (MB/s; grpcio: a client-streaming call of 1 MiB
messages; pyzmq: 1 MiB frames, acknowledged once at the end). EchoStream runs over QUIC with
TLS 1.3; grpcio and pyzmq run over plain TCP (no TLS), which favours them.
A benchmark, not a test: figures depend on the machine and on how idle it is; compare them as
ratios from one run.
"""

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time

PAYLOAD = b"x" * 64
CHUNK = 1 << 20


# ------------------------------------------------------------------ servers (child processes)

async def serve_echostream() -> None:
    import echostream

    server = echostream.Server("127.0.0.1:0", identity=echostream.Identity.ephemeral())

    @server.handler("echo")
    def echo(value):
        return value

    @server.stream_handler("sink")
    async def sink(stream):
        total = 0
        while chunk := await stream.read(CHUNK):
            total += len(chunk)
        await stream.write_all(str(total).encode())
        await stream.write_eof()

    async with server:
        print(server.address, server.fingerprint, flush=True)
        await asyncio.Event().wait()


async def serve_grpc() -> None:
    import grpc

    async def echo(request, context):
        return request

    async def sink(request_iterator, context):
        total = 0
        async for chunk in request_iterator:
            total += len(chunk)
        return str(total).encode()

    server = grpc.aio.server(options=[("grpc.max_receive_message_length", 8 << 20)])
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("bench.Bench", {
        "Echo": grpc.unary_unary_rpc_method_handler(echo),
        "Sink": grpc.stream_unary_rpc_method_handler(sink),
    }),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    print(f"127.0.0.1:{port}", "-", flush=True)
    await server.wait_for_termination()


async def serve_zmq() -> None:
    import zmq
    import zmq.asyncio

    ctx = zmq.asyncio.Context()
    sock = ctx.socket(zmq.ROUTER)
    port = sock.bind_to_random_port("tcp://127.0.0.1")
    print(f"127.0.0.1:{port}", "-", flush=True)
    totals = {}
    while True:
        ident, kind, *rest = await sock.recv_multipart(copy=False)
        kind = kind.bytes
        if kind == b"c":  # call: [id, payload]
            await sock.send_multipart([ident, kind, *rest], copy=False)
        elif kind == b"d":  # stream data
            key = ident.bytes
            totals[key] = totals.get(key, 0) + len(rest[0])
        elif kind == b"e":  # stream end
            total = totals.pop(ident.bytes, 0)
            await sock.send_multipart([ident, b"e", str(total).encode()])


# ------------------------------------------------------------------ clients

class EchoStreamClient:
    async def open(self, addr, pin):
        import echostream
        self.c = await echostream.connect(addr, pin=pin)
        self.payload = PAYLOAD.decode()

    async def call(self):
        await self.c.request("echo", self.payload)

    async def stream(self, mib):
        s = await self.c.open_stream("sink")
        block = os.urandom(CHUNK)
        for _ in range(mib):
            await s.write_all(block)
        await s.write_eof()
        return int(await s.read_to_end())

    async def close(self):
        await self.c.close()


class GrpcClient:
    async def open(self, addr, pin):
        import grpc
        self.ch = grpc.aio.insecure_channel(addr, options=[("grpc.max_send_message_length", 8 << 20)])
        self.echo = self.ch.unary_unary("/bench.Bench/Echo")
        self.sink = self.ch.stream_unary("/bench.Bench/Sink")

    async def call(self):
        await self.echo(PAYLOAD)

    async def stream(self, mib):
        block = os.urandom(CHUNK)

        async def chunks():
            for _ in range(mib):
                yield block

        return int(await self.sink(chunks()))

    async def close(self):
        await self.ch.close()


class ZmqClient:
    async def open(self, addr, pin):
        import zmq
        import zmq.asyncio
        self.ctx = zmq.asyncio.Context()
        self.sock = self.ctx.socket(zmq.DEALER)
        self.sock.connect(f"tcp://{addr}")
        self.pending = {}
        self.next_id = 0
        self.reader = asyncio.ensure_future(self._read())

    async def _read(self):
        while True:
            kind, *rest = await self.sock.recv_multipart()
            key = rest[0] if kind == b"c" else b"end"
            fut = self.pending.pop(key, None)
            if fut is not None and not fut.done():
                fut.set_result(rest[-1])

    async def call(self):
        self.next_id += 1
        key = self.next_id.to_bytes(8, "little")
        fut = asyncio.get_running_loop().create_future()
        self.pending[key] = fut
        await self.sock.send_multipart([b"c", key, PAYLOAD])
        await fut

    async def stream(self, mib):
        block = os.urandom(CHUNK)
        fut = asyncio.get_running_loop().create_future()
        self.pending[b"end"] = fut
        for _ in range(mib):
            await self.sock.send_multipart([b"d", block], copy=False)
        await self.sock.send_multipart([b"e"])
        return int(await fut)

    async def close(self):
        self.reader.cancel()
        self.sock.close(linger=0)
        self.ctx.term()


SYSTEMS = {"echostream": (serve_echostream, EchoStreamClient),
           "grpcio": (serve_grpc, GrpcClient),
           "pyzmq": (serve_zmq, ZmqClient)}


async def measure(system, calls, seconds, mib):
    proc = subprocess.Popen([sys.executable, __file__, "--serve", system], stdout=subprocess.PIPE, text=True)
    try:
        addr, pin = proc.stdout.readline().split()
        client = SYSTEMS[system][1]()
        await client.open(addr, pin)
        for _ in range(200):  # warm-up
            await client.call()
        lat = []
        for _ in range(calls):
            t = time.perf_counter()
            await client.call()
            lat.append(time.perf_counter() - t)
        lat.sort()
        p50 = lat[len(lat) // 2] * 1e6
        p99 = lat[int(len(lat) * 0.99)] * 1e6

        done = 0
        stop_at = time.perf_counter() + seconds

        async def caller():
            nonlocal done
            while time.perf_counter() < stop_at:
                await client.call()
                done += 1

        t = time.perf_counter()
        await asyncio.gather(*(caller() for _ in range(64)))
        rate = done / (time.perf_counter() - t)

        t = time.perf_counter()
        got = await client.stream(mib)
        mbps = got / (time.perf_counter() - t) / 1e6
        assert got == mib * CHUNK, (system, got)
        await client.close()
        return p50, p99, rate, mbps
    finally:
        proc.kill()
        proc.wait()


def rust_client_stream(binary, mib, rust_server=False):
    """MB/s of the same stream sent by the Rust client (examples/py_interop.rs, `stream`) to the
    same Python EchoStream server, or with `rust_server` to the Rust server of that example."""
    import json

    if rust_server:
        cmd = [binary, "server"]
    else:
        cmd = [sys.executable, __file__, "--serve", "echostream"]
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        addr, pin = proc.stdout.readline().split()
        out = subprocess.run([binary, "stream", addr, pin, str(mib)], capture_output=True, text=True, check=True)
        return json.loads(out.stdout)["value"]
    finally:
        proc.kill()
        proc.wait()


async def main(a):
    rows = []
    for system in a.systems:
        rows.append((system, *await measure(system, a.calls, a.seconds, a.stream_mib)))
    print(f"| Python client → Python server | seq. 64 B p50 | seq. 64 B p99 | 64 callers | {a.stream_mib} MiB stream |")
    print("|---|---|---|---|---|")
    for system, p50, p99, rate, mbps in rows:
        print(f"| {system} | {p50:.1f} µs | {p99:.1f} µs | {rate:,.0f} calls/s | {mbps:,.0f} MB/s |")
    if a.rust_client:
        mbps = rust_client_stream(a.rust_client, a.stream_mib)
        print(f"| echostream, Rust client (py_interop) → Python server | | | | {mbps:,.0f} MB/s |")
        mbps = rust_client_stream(a.rust_client, a.stream_mib, rust_server=True)
        print(f"| echostream, Rust client → Rust server (py_interop) | | | | {mbps:,.0f} MB/s |")


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--serve", choices=list(SYSTEMS))
    p.add_argument("--calls", type=int, default=3000)
    p.add_argument("--seconds", type=float, default=3.0)
    p.add_argument("--stream-mib", type=int, default=256)
    p.add_argument("--systems", nargs="+", default=list(SYSTEMS), choices=list(SYSTEMS))
    p.add_argument("--rust-client", metavar="PATH",
                   help="the py_interop example (built with --release) for the Rust-client stream row")
    a = p.parse_args()
    if a.serve:
        asyncio.run(SYSTEMS[a.serve][0]())
    else:
        asyncio.run(main(a))
