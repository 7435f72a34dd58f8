"""An independent mDNS peer (python-zeroconf) for the discovery interop tests.

Run only inside a network namespace made by the test (see
echostream-discovery/tests/netns/mod.rs); it uses the IPv4 loopback only.

    zeroconf_peer.py resolve NAME TIMEOUT_S
        browses _echostream._udp.local., resolves the first instance named NAME
        (or "NAME (N)") and prints it as one JSON line; exit 1 on timeout.
    zeroconf_peer.py announce NAME PORT FINGERPRINT [TTL_S]
        announces NAME with TXT proto/fp/id/room (records with TTL_S seconds
        if given), prints "registered", keeps it until stdin closes, then
        unregisters (goodbye) and exits. Killed instead, it sends no goodbye:
        browsers must drop it when its records expire.
"""
import json
import re
import socket
import sys
import time

from zeroconf import IPVersion, ServiceBrowser, ServiceInfo, ServiceStateChange, Zeroconf

TYPE = "_echostream._udp.local."


def zc():
    return Zeroconf(interfaces=["127.0.0.1"], ip_version=IPVersion.V4Only)


def resolve(name, timeout):
    conf = zc()
    seen = []
    wanted = re.compile(re.escape(name) + r"( \(\d+\))?\." + re.escape(TYPE) + "$", re.IGNORECASE)

    def on_change(zeroconf, service_type, name, state_change):
        if state_change in (ServiceStateChange.Added, ServiceStateChange.Updated):
            seen.append(name)

    ServiceBrowser(conf, TYPE, handlers=[on_change])
    deadline = time.time() + timeout
    try:
        while time.time() < deadline:
            for full in list(seen):
                if not wanted.match(full):
                    continue
                info = conf.get_service_info(TYPE, full, timeout=2000)
                if info is None or not info.parsed_addresses():
                    continue
                props = {k.decode(): (v.decode() if v is not None else "") for k, v in info.properties.items()}
                print(json.dumps({
                    "fullname": full,
                    "server": info.server,
                    "port": info.port,
                    "addresses": info.parsed_addresses(),
                    "txt": props,
                }), flush=True)
                return 0
            time.sleep(0.05)
        print(f"no {name!r} resolved within {timeout}s; seen: {seen}", file=sys.stderr)
        return 1
    finally:
        conf.close()


def announce(name, port, fingerprint, ttl=None):
    conf = zc()
    ttls = {} if ttl is None else {"host_ttl": ttl, "other_ttl": ttl}
    info = ServiceInfo(
        TYPE,
        f"{name}.{TYPE}",
        addresses=[socket.inet_aton("127.0.0.1")],
        port=port,
        properties={"proto": "1", "fp": fingerprint, "id": "zeroconf-peer", "room": "attic"},
        server="zeroconf-peer.local.",
        **ttls,
    )
    conf.register_service(info)
    print("registered", flush=True)
    sys.stdin.read()
    conf.unregister_service(info)
    conf.close()
    return 0


if __name__ == "__main__":
    cmd = sys.argv[1]
    if cmd == "resolve":
        sys.exit(resolve(sys.argv[2], float(sys.argv[3])))
    if cmd == "announce":
        ttl = int(sys.argv[5]) if len(sys.argv) > 5 else None
        sys.exit(announce(sys.argv[2], int(sys.argv[3]), sys.argv[4], ttl))
    sys.exit(f"unknown command {cmd}")
