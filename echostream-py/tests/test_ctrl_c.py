"""Ctrl-C (SIGINT) in a program blocked on a call: asyncio.run cancels the main task, the
awaitable drops its Rust future, and the program ends with KeyboardInterrupt, no hang, no crash."""

import asyncio
import signal
import sys

SCRIPT = r'''
import asyncio, echostream, signal

# A process started from a background job of a non-interactive shell (as CI scripts often
# are) inherits SIGINT ignored, and Python then installs no KeyboardInterrupt handler.
signal.signal(signal.SIGINT, signal.default_int_handler)

async def main():
    # A short grace: if the call was cancelled before its request left, the server's handler
    # still runs, and closing the server waits for it only this long (this test is about the
    # client's Ctrl-C, not the server's grace period).
    server = echostream.Server("127.0.0.1:0", identity=echostream.Identity.ephemeral(), shutdown_grace=1)

    @server.handler("forever")
    async def forever():
        await asyncio.Event().wait()

    async with server:
        client = await echostream.connect(server.address, pin=server.fingerprint)
        print("waiting", flush=True)
        await client.request("forever", timeout=600)

asyncio.run(main())
'''


async def test_sigint_cancels_a_pending_call():
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", SCRIPT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    assert (await asyncio.wait_for(proc.stdout.readline(), 30)).strip() == b"waiting"
    await asyncio.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, err = await asyncio.wait_for(proc.communicate(), 60)
    err = err.decode()
    assert "KeyboardInterrupt" in err, err
    assert "panicked" not in err and "Fatal Python error" not in err, err
    # Ended by the exception (exit status 1 or the SIGINT convention), not by a crash signal.
    assert proc.returncode in (1, -signal.SIGINT, 130), (proc.returncode, err)
