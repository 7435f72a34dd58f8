"""The inner run of test_discovery.py's example test: runs examples/discover.py (announce, then
find) and checks what both print. Only ever started inside a fresh network namespace: it refuses
to run unless its namespace differs from the one named by ECHOSTREAM_OUTER_NETNS."""

import pathlib
import re
import subprocess
import sys

from netns_discover import assert_isolated

EXAMPLE = pathlib.Path(__file__).resolve().parents[1] / "examples" / "discover.py"


def main() -> None:
    # In a fresh namespace the only interface is `lo`: the example's default ("all") stays on it.
    announcer = subprocess.Popen(
        [sys.executable, "-u", str(EXAMPLE), "announce", "PyExampleService", "--bind", "127.0.0.1:0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        first = announcer.stdout.readline()
        m = re.match(r"announcing PyExampleService at (\S+) \((\w+)\)", first)
        assert m, f"announce printed {first!r}; stderr: {announcer.stderr.read() if announcer.poll() is not None else ''}"
        addr, fp = m.groups()
        found = subprocess.run(
            [sys.executable, str(EXAMPLE), "find", "PyExampleService", "--timeout", "10"],
            capture_output=True, text=True, timeout=60,
        )
        assert found.returncode == 0, f"find failed: {found.stdout}{found.stderr}"
        # It found the announced instance, pinned the fingerprint announced, and called it.
        assert f"found PyExampleService at {addr} ({fp})" in found.stdout, found.stdout
        assert "'service': 'PyExampleService'" in found.stdout, found.stdout
        # The announcer saw the finder's connection come and go.
        seen = [announcer.stdout.readline().strip() for _ in range(2)]
        assert seen[0].startswith("connected: 127.0.0.1:"), seen
        assert seen[1].startswith("disconnected: 127.0.0.1:"), seen
        missing = subprocess.run(
            [sys.executable, str(EXAMPLE), "find", "NoSuchExampleService", "--timeout", "1"],
            capture_output=True, text=True, timeout=60,
        )
        assert missing.returncode == 1, missing
        assert "not found" in missing.stderr and "NoSuchExampleService" in missing.stderr, missing.stderr
    finally:
        announcer.kill()
        announcer.wait()
    print("discover example ok")


if __name__ == "__main__":
    assert_isolated()
    main()
