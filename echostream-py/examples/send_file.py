"""Send a file over an XStream, with progress and a SHA-256 check at both ends.

    python send_file.py receive [--bind 127.0.0.1:5001] [--dir received]
        # prints its address and fingerprint, stores each file it receives
    python send_file.py send ADDRESS FINGERPRINT FILE

The sender opens stream ``file.upload`` with the file's name and size as metadata, writes the
bytes, ends its data, and reads the receiver's answer: the byte count and the SHA-256 it
computed, which must match the sender's. A refusal (a name with a path, a short file) arrives
on the stream's error half.
"""

import argparse
import asyncio
import hashlib
import os
import pathlib
import sys
import time

import echostream

CHUNK = 1 << 20


async def receive(bind: str, directory: str) -> None:
    out_dir = pathlib.Path(directory)
    out_dir.mkdir(parents=True, exist_ok=True)
    server = echostream.Server(bind, identity=echostream.Identity.ephemeral())

    @server.stream_handler("file.upload")
    async def upload(ctx, stream):
        meta = dict(stream.metadata)
        name = meta.get("name", "")
        if not name or os.path.basename(name) != name or name in (".", ".."):
            await stream.error_write(f"refused: `{name}` is not a plain file name".encode())
            return
        size = int(meta.get("size", "-1"))
        digest, got = hashlib.sha256(), 0
        target = out_dir / name
        with open(target, "wb") as f:
            while True:
                chunk = await stream.read(CHUNK)
                if not chunk:
                    break
                digest.update(chunk)
                f.write(chunk)
                got += len(chunk)
        if got != size:
            await stream.error_write(f"refused: got {got} bytes of {size}".encode())
            return
        print(f"[{ctx.peer_address}] {name}: {got} bytes, sha256 {digest.hexdigest()}", flush=True)
        await stream.write_all(f"{got} {digest.hexdigest()}".encode())
        await stream.write_eof()

    async with server:
        print(f"{server.address} {server.fingerprint}", flush=True)
        await asyncio.Event().wait()


async def send(addr: str, pin: str, path: str) -> int:
    size = os.path.getsize(path)
    async with await echostream.connect(addr, pin=pin) as client:
        stream = await client.open_stream(
            "file.upload", metadata={"name": os.path.basename(path), "size": str(size)}
        )
        digest, sent, started = hashlib.sha256(), 0, time.monotonic()
        with open(path, "rb") as f:
            while chunk := f.read(CHUNK):
                digest.update(chunk)
                await stream.write_all(chunk)
                sent += len(chunk)
                rate = sent / max(time.monotonic() - started, 1e-6) / 1e6
                print(f"\r{sent}/{size} bytes ({100 * sent // max(size, 1)} %) {rate:.1f} MB/s",
                      end="", file=sys.stderr, flush=True)
        await stream.write_eof()
        print(file=sys.stderr)
        try:
            answer = (await stream.read_to_end()).decode()
        except echostream.StreamError:
            print(f"the receiver refused: {(await stream.error_read()).decode()}", file=sys.stderr)
            return 1
    count, their_hash = answer.split()
    ok = int(count) == size and their_hash == digest.hexdigest()
    print(f"sha256 {digest.hexdigest()} {'matches' if ok else 'DIFFERS from ' + their_hash}")
    return 0 if ok else 1


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("receive")
    r.add_argument("--bind", default="127.0.0.1:5001")
    r.add_argument("--dir", default="received")
    s = sub.add_parser("send")
    s.add_argument("address")
    s.add_argument("fingerprint")
    s.add_argument("file")
    a = p.parse_args()
    try:
        if a.cmd == "receive":
            asyncio.run(receive(a.bind, a.dir))
            return 0
        return asyncio.run(send(a.address, a.fingerprint, a.file))
    except KeyboardInterrupt:
        return 130
    except echostream.EchoStreamError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
