"""Type stubs of the native module (the Rust half). Use the ``echostream`` package instead:
it encodes and decodes values (JSON) around these classes."""

from typing import Any, Awaitable, Callable, Dict, List, Optional, Tuple, Union

_Pairs = List[Tuple[str, str]]
_IdentitySpec = Tuple[str, Optional[str], Optional[str]]
_Routes = Tuple[List[Tuple[str, Any]], List[Tuple[str, Any]], List[Tuple[str, Any]], List[str]]
"""Handlers, listeners, stream handlers (name, function), and the idempotent handlers' names."""
_Authenticator = Callable[[str, Optional[str], Optional[str], _Pairs], Awaitable[Optional[str]]]
"""(remote, client certificate fingerprint, token, hello metadata) -> the identity's name; None
or an exception (its message is the reason) rejects."""
_Interceptor = Callable[[CallContext, str], Awaitable[None]]
"""(context, "request" | "event" | "stream"); raising denies the call."""

def connect(
    addr: Optional[str],
    *,
    pins: Optional[List[str]] = None,
    ca: Optional[str] = None,
    known_hosts: Optional[str] = None,
    insecure: bool = False,
    token: Optional[str] = None,
    timeout: Optional[float] = None,
    server_name: Optional[str] = None,
    cert: Optional[str] = None,
    key: Optional[str] = None,
    routes: Optional[_Routes] = None,
    hello: Optional[_Pairs] = None,
    discover: Optional[str] = None,
    discover_timeout: Optional[float] = None,
    interfaces: Optional[Union[str, List[str]]] = None,
    identity: Optional[_IdentitySpec] = None,
    call_timeout: Optional[float] = None,
    reconnect: Optional[Tuple[float, float, Optional[int], bool]] = None,
    zero_rtt: bool = True,
    resumption: bool = True,
    idempotent: Optional[List[str]] = None,
    idle_timeout: Optional[float] = None,
    keep_alive: Optional[float] = None,
    max_frame_size: Optional[int] = None,
    stream_options: Optional[Dict[str, float]] = None,
    event_queue: Optional[int] = None,
    assembly_timeout: Optional[float] = None,
    max_assembly_bytes: Optional[int] = None,
    interceptors: Optional[List[_Interceptor]] = None,
    transport: Optional[Dict[str, Any]] = None,
    completions: Optional[Completions] = None,
) -> Awaitable[Client]:
    """Connects; every connect() of the process shares one store of TLS session tickets."""
def identity_fingerprint(spec: _IdentitySpec) -> str:
    """The fingerprint of the identity ``spec`` names (loads it; not for ephemeral ones)."""

def start_server(
    bind: str,
    identity_spec: _IdentitySpec,
    routes: _Routes,
    discovery: Optional[str] = None,
    interfaces: Optional[Union[str, List[str]]] = None,
    tokens: Optional[_Pairs] = None,
    require_token: bool = False,
    client_auth: Optional[Tuple[bool, Optional[str], Optional[List[str]]]] = None,
    approve_connections: Optional[int] = None,
    max_connections: Optional[int] = None,
    handshake_timeout: Optional[float] = None,
    shutdown_grace: Optional[float] = None,
    zero_rtt: bool = False,
    idle_timeout: Optional[float] = None,
    max_frame_size: Optional[int] = None,
    max_concurrent_requests: Optional[int] = None,
    stream_options: Optional[Dict[str, float]] = None,
    rate_limit: Optional[int] = None,
    method_rate_limits: Optional[List[Tuple[str, int]]] = None,
    default_handler_timeout: Optional[float] = None,
    max_connections_per_address: Optional[int] = None,
    event_queue: Optional[int] = None,
    assembly_timeout: Optional[float] = None,
    max_assembly_bytes: Optional[int] = None,
    authenticator: Optional[_Authenticator] = None,
    interceptors: Optional[List[_Interceptor]] = None,
    transport: Optional[Dict[str, Any]] = None,
    completions: Optional[Completions] = None,
) -> NativeServer: ...

class Client:
    remote_address: str
    server_fingerprint: Optional[str]
    def request(
        self, method: str, args: str, timeout: Optional[float] = None, metadata: Optional[_Pairs] = None
    ) -> Awaitable[str]: ...
    def request_via(
        self, completions: Completions, method: str, args: str, timeout: Optional[float] = None,
        metadata: Optional[_Pairs] = None,
    ) -> int:
        """``request``, its result delivered through ``completions`` under the returned id."""
    def emit(self, name: str, value: str) -> Awaitable[None]: ...
    def subscribe(self, name: str) -> EventStream: ...
    def ping(self, timeout: float = 5.0) -> Awaitable[float]: ...
    def peer(self) -> PeerHandle: ...
    def clock(self) -> Clock: ...
    def info(self) -> Dict[str, Any]: ...
    def is_connected(self) -> bool: ...
    def can_resume(self) -> bool: ...
    def health(self, service: str = "") -> Awaitable[str]:
        """The server's health status for ``service``: ``"SERVING"``, ``"NOT_SERVING"``,
        ``"UNKNOWN"`` or ``"SERVICE_UNKNOWN"``."""
    def connection_events(self) -> ClientEventStream: ...
    def open_stream(self, name: str, metadata: Optional[_Pairs] = None) -> Awaitable[Stream]: ...
    def close(self) -> Awaitable[None]: ...

class PeerHandle:
    address: str
    zero_rtt: str
    """``"not-attempted"``, ``"pending"``, ``"accepted"`` or ``"rejected"``."""
    connection_id: int
    fingerprint: Optional[str]
    hello_metadata: _Pairs
    def request(
        self, method: str, args: str, timeout: Optional[float] = None, metadata: Optional[_Pairs] = None
    ) -> Awaitable[str]: ...
    def request_via(
        self, completions: Completions, method: str, args: str, timeout: Optional[float] = None,
        metadata: Optional[_Pairs] = None,
    ) -> int:
        """``request``, its result delivered through ``completions`` under the returned id."""
    def emit(self, name: str, value: str) -> Awaitable[None]: ...
    def ping(self, timeout: float = 5.0) -> Awaitable[float]: ...
    def open_stream(self, name: str, metadata: Optional[_Pairs] = None) -> Awaitable[Stream]: ...
    def closed(self) -> Awaitable[str]: ...
    def close(self, reason: str = ...) -> None: ...
    def is_closed(self) -> bool: ...
    def info(self) -> Dict[str, Any]: ...
    def clock(self) -> Clock: ...

class ClientEventStream:
    def next(self) -> Awaitable[Optional[Dict[str, Any]]]: ...

class EventStream:
    def next(self) -> Awaitable[Optional[str]]: ...
    def dropped(self) -> int: ...

class Clock:
    """The clock synchronised with a peer's; times are nanoseconds since the UNIX epoch."""

    def synced(self, samples: int = 8, timeout: float = 5.0) -> Awaitable[None]:
        """Waits until ``samples`` clock samples are in (at most ``timeout`` seconds)."""
    def now(self) -> Optional[int]:
        """The peer's time now (``None`` before the first sample)."""
    def local_now(self) -> int:
        """This side's time now."""
    def offset_nanos(self) -> Optional[int]:
        """Peer clock minus local clock, in nanoseconds."""
    def rtt(self) -> Optional[float]:
        """Round-trip time of the best sample, in seconds."""
    def error_bound(self) -> Optional[float]:
        """Bound of the offset's error, in seconds."""
    def drift_ppm(self) -> Optional[float]:
        """Drift of the peer's clock against the local one, in parts per million."""

class Stream:
    """One stream pair with its error half (Rust ``XStream``). Writes take ``bytes`` or
    ``bytearray`` (``bytes`` without a copy); reads return ``bytes``."""

    name: str
    state: str
    """``"open"``, ``"write-closed"``, ``"read-closed"``, ``"closed"`` or ``"error"``."""
    metadata: _Pairs
    peer: PeerHandle
    def read(self, n: int = 65536) -> Awaitable[bytes]:
        """Up to ``n`` bytes; ``b""`` at the end of the data. A read waits for the first bytes,
        then takes everything else that has already arrived, up to ``n``: for bulk data a large
        ``n`` (1 MiB) means fewer awaits."""
    def read_chunk(self) -> Awaitable[Optional[bytes]]:
        """The next chunk as it arrived (often one packet's worth), or ``None`` at the end."""
    def read_exact(self, n: int) -> Awaitable[bytes]:
        """Exactly ``n`` bytes (``StreamError`` if the data ends first)."""
    def read_to_end(self) -> Awaitable[bytes]:
        """Everything up to the end of the data."""
    def write(self, data: bytes) -> Awaitable[int]:
        """Writes some of ``data``; returns how much was taken."""
    def write_all(self, data: bytes) -> Awaitable[None]:
        """Writes all of ``data`` (``bytes`` reach QUIC without a copy)."""
    def flush(self) -> Awaitable[None]:
        """Waits until what was written has left."""
    def write_eof(self) -> Awaitable[None]:
        """Ends this side's data; reading goes on."""
    def close(self) -> Awaitable[None]:
        """Closes both directions."""
    def error_write(self, data: bytes, with_data_flush: bool = True) -> Awaitable[None]:
        """Writes ``data`` on the error half (acceptor only); with ``with_data_flush`` the data
        written so far is delivered first."""
    def error_read(self) -> Awaitable[bytes]:
        """Waits for the acceptor's error message (opener only)."""
    def messages(self) -> MessageStream:
        """This stream as JSON messages both ways (the byte operations are gone after)."""

class MessageStream:
    def send(self, value: str) -> Awaitable[None]: ...
    def recv(self) -> Awaitable[Optional[str]]: ...
    def finish(self) -> Awaitable[None]: ...
    def fail(self, code: int, message: str) -> Awaitable[None]: ...

class CallContext:
    method: str
    peer_address: str
    fingerprint: Optional[str]
    metadata: _Pairs
    hello_metadata: _Pairs
    remaining: Optional[float]
    identity: Optional[str]
    peer: PeerHandle

class StreamAcceptor:
    def next(self) -> Awaitable[Optional[Tuple[PeerHandle, Stream]]]: ...

class ConnectionEventStream:
    def next(self) -> Awaitable[Optional[Dict[str, Any]]]: ...

class ConnectionRequestStream:
    def next(self) -> Awaitable[Optional[PendingConnection]]: ...

class PendingConnection:
    """One connection waiting for a decision; dropping it undecided rejects it."""

    remote: str
    fingerprint: Optional[str]
    metadata: _Pairs
    def approve(self) -> None:
        """Admits the connection (``RuntimeError`` if already decided)."""
    def reject(self, reason: str) -> None:
        """Refuses it; the client's connect fails with ``reason``."""

class NativeServer:
    address: str
    fingerprint: str
    def peers(self) -> List[PeerHandle]: ...
    def set_serving(self, service: str) -> None: ...
    def set_not_serving(self, service: str) -> None: ...
    def health(self, service: str) -> str: ...
    def broadcast(self, name: str, value: str) -> Awaitable[int]: ...
    def subscribe(self, name: str) -> EventStream: ...
    def accept(self, name: str) -> StreamAcceptor: ...
    def connection_events(self) -> ConnectionEventStream: ...
    def connection_requests(self) -> ConnectionRequestStream: ...
    def close(self) -> Awaitable[None]: ...

class Completions:
    """Requests whose results, and handler starts, the event loop takes in batches: register
    ``loop.add_reader(c.fileno(), lambda: ...c.drain(loop)...)`` (unix only)."""

    def fileno(self) -> int: ...
    def drain(self, event_loop: Any) -> List[Tuple[int, Any, bool]]:
        """Starts the queued handler coroutines, then returns ``(id, value, ok)`` per finished
        request: the result's JSON text, or the exception to raise."""
    def cancel(self, id: int) -> None: ...
