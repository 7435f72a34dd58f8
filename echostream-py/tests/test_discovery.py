"""Discovery from Python, run inside a network namespace the test creates (mDNS never leaves
it). Without root or `unshare` the test skips, unless ECHOSTREAM_REQUIRE_NETNS=1 (set by
`.ci/run`), which makes that a failure."""

import os
import pathlib
import shutil
import subprocess
import sys

import pytest

INNER = pathlib.Path(__file__).with_name("netns_discover.py")
INNER_EXAMPLE = pathlib.Path(__file__).with_name("netns_discover_example.py")


def netns_unavailable():
    if os.geteuid() != 0:
        return "needs root to create a network namespace"
    for tool in ("unshare", "ip"):
        if shutil.which(tool) is None:
            return f"needs `{tool}`"
    return None


def run_in_a_new_network_namespace(script):
    """Runs ``script`` with this Python inside a network namespace made for it (only `lo`, up);
    skips (or fails, with ECHOSTREAM_REQUIRE_NETNS=1) where one cannot be made."""
    why = netns_unavailable()
    if why:
        if os.environ.get("ECHOSTREAM_REQUIRE_NETNS") == "1":
            pytest.fail(f"ECHOSTREAM_REQUIRE_NETNS=1 but the namespace cannot be made: {why}")
        pytest.skip(why)
    env = dict(os.environ, ECHOSTREAM_OUTER_NETNS=os.readlink("/proc/self/ns/net"))
    out = subprocess.run(
        ["unshare", "--net", "sh", "-c", 'ip link set lo up && exec "$0" "$@"', sys.executable, str(script)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=str(INNER.parent),
    )
    assert out.returncode == 0, f"inner run failed:\n{out.stdout}\n{out.stderr}"
    return out.stdout


def test_discover_inside_a_network_namespace():
    assert "discovery ok" in run_in_a_new_network_namespace(INNER)


def test_the_discover_example_announces_and_finds_inside_a_network_namespace():
    assert "discover example ok" in run_in_a_new_network_namespace(INNER_EXAMPLE)
