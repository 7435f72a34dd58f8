"""EchoStream for asyncio: QUIC RPC (requests, events, streams) with the Rust core's speed.

Quick start::

    import asyncio, echostream

    async def main():
        server = echostream.Server("127.0.0.1:5000", identity=echostream.Identity.ephemeral())

        @server.handler("math.add")
        def add(a, b):
            return a + b

        async with server:
            client = await echostream.connect(server.address, pin=server.fingerprint)
            print(await client.request("math.add", 2, 3))   # 5
            await client.close()

    asyncio.run(main())

Values travel with the JSON codec: ``None``, ``bool``, ``int``, ``float`` (finite), ``str``,
``list``/``tuple`` (arrive as ``list``), ``dict`` with ``str`` keys. ``bytes``, ``bytearray``
and ``memoryview`` travel as a JSON array of integers 0-255 (what serde gives a Rust
``Vec<u8>``) and arrive as a ``list``; use a stream for bulk data. Any other type raises
``TypeError`` naming it before anything is sent.

One argument travels as itself; several travel as a JSON array, which a Rust handler taking a
tuple ``(A, B)`` decodes; none travels as ``null`` (a Rust ``()``).
"""

from __future__ import annotations

import asyncio
import inspect
import json
from typing import (
    Any,
    AsyncIterator,
    Awaitable,
    Callable,
    Dict,
    Iterable,
    List,
    Mapping,
    Optional,
    Sequence,
    Tuple,
    TypeVar,
    Union,
)

import atexit
import functools
import time
import weakref

from . import _echostream as _native
from ._echostream import Clock, Stream
from ._errors import *  # noqa: F401,F403 - the exception hierarchy is part of this namespace
from ._errors import Code, RemoteError
from ._errors import __all__ as _errors_all

__all__ = [
    "connect",
    "discover",
    "Client",
    "Server",
    "Router",
    "Identity",
    "ClientAuth",
    "Reconnect",
    "ConnectionRequest",
    "ConnectionRequests",
    "Context",
    "Peer",
    "Stream",
    "Clock",
    "Subscription",
    "Incoming",
    "ConnectionEvents",
    "MessageStream",
    "AuthRequest",
    *_errors_all,
]

F = TypeVar("F", bound=Callable[..., Any])


@atexit.register
def _let_completions_finish() -> None:
    # The awaitables of the native module are completed from a tokio blocking thread that calls
    # `loop.call_soon_threadsafe` with the GIL; the call releases the GIL while it wakes the
    # loop, and if the program ends in that window the thread takes the GIL back after the
    # interpreter started finalizing and crashes the process. Atexit callbacks run before that
    # point: releasing the GIL briefly here lets such a thread finish its call.
    time.sleep(0.02)
MetadataArg = Optional[Union[Mapping[str, str], Iterable[Tuple[str, str]]]]

# ---------------------------------------------------------------------------------------------
# Values
# ---------------------------------------------------------------------------------------------


def _default(o: Any) -> Any:
    if isinstance(o, (bytes, bytearray, memoryview)):
        return list(bytes(o))
    raise TypeError(f"a value of type {type(o).__name__} cannot travel as JSON")


def _dumps(value: Any, what: str) -> str:
    try:
        return json.dumps(value, separators=(",", ":"), allow_nan=False, default=_default)
    except (TypeError, ValueError) as e:
        raise TypeError(f"{what}: {e}") from None


def _encode_args(method: str, args: Tuple[Any, ...]) -> str:
    if len(args) == 1:
        return _dumps(args[0], f"the argument of `{method}`")
    if not args:
        return "null"
    return _dumps(list(args), f"the arguments of `{method}`")


def _metadata(md: MetadataArg, what: str = "metadata") -> Optional[List[Tuple[str, str]]]:
    if md is None:
        return None
    items = md.items() if isinstance(md, Mapping) else md
    out = []
    for pair in items:
        try:
            k, v = pair
        except (TypeError, ValueError):
            raise TypeError(f"{what} must be a dict of str to str or (key, value) pairs") from None
        if not isinstance(k, str) or not isinstance(v, str):
            raise TypeError(
                f"{what} keys and values must be str, not {type(k).__name__}: {type(v).__name__}"
            )
        out.append((k, v))
    return out


def _timeout(timeout: Optional[float]) -> Optional[float]:
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise TypeError(f"timeout must be a number of seconds, not {type(timeout).__name__}")
    return float(timeout)


# ---------------------------------------------------------------------------------------------
# Calling: what a client and a peer handle share
# ---------------------------------------------------------------------------------------------


class _Completions:
    """The calls of one event loop whose results arrive in batches (the native
    ``Completions``): a finished call costs the loop no thread hand-off of its own, and many
    finished calls one wake-up. Cancelling a call's future aborts the Rust call (which cancels
    it on the peer). Handlers registered from this loop start through the same queue."""

    __slots__ = ("_native", "_pending", "__weakref__")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._native = _native.Completions()
        self._pending: Dict[int, "asyncio.Future[Any]"] = {}
        # No reference to the loop here: the loop is the key of a weak dictionary.
        loop.add_reader(self._native.fileno(), self._drain)

    def _drain(self) -> None:
        # Starts the handlers' coroutines queued since the last drain, then settles the calls.
        for call_id, value, ok in self._native.drain(asyncio.get_running_loop()):
            fut = self._pending.pop(call_id, None)
            if fut is None or fut.done():
                continue
            if ok:
                fut.set_result(value)
            else:
                fut.set_exception(value)

    def future(self, call_id: int) -> "asyncio.Future[Any]":
        fut = asyncio.get_running_loop().create_future()
        self._pending[call_id] = fut
        fut.add_done_callback(functools.partial(self._settled, call_id))
        return fut

    def _settled(self, call_id: int, fut: "asyncio.Future[Any]") -> None:
        if fut.cancelled():
            self._pending.pop(call_id, None)
            self._native.cancel(call_id)


_COMPLETIONS: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Optional[_Completions]]" = (
    weakref.WeakKeyDictionary()
)


def _completions() -> Optional[_Completions]:
    """The running loop's completions; ``None`` where a loop cannot watch a socket (Windows'
    proactor loop) or the native module has none: calls then complete one by one."""
    loop = asyncio.get_running_loop()
    try:
        return _COMPLETIONS[loop]
    except KeyError:
        pass
    c: Optional[_Completions] = None
    if hasattr(_native, "Completions"):
        try:
            c = _Completions(loop)
        except NotImplementedError:
            c = None
    _COMPLETIONS[loop] = c
    return c


def _native_completions() -> Any:
    c = _completions()
    return None if c is None else c._native


class _Caller:
    __slots__ = ("_native",)

    async def request(
        self,
        method: str,
        *args: Any,
        timeout: Optional[float] = None,
        metadata: MetadataArg = None,
    ) -> Any:
        """Calls ``method`` with ``args`` and returns its result.

        Raises :class:`RemoteError` (and its kinds) when the handler fails,
        :class:`TimeoutError` when ``timeout`` seconds pass (default: 30 s).
        """
        if not isinstance(method, str):
            raise TypeError(f"method must be a str, not {type(method).__name__}")
        encoded, seconds, md = _encode_args(method, args), _timeout(timeout), _metadata(metadata)
        completions = _completions()
        if completions is None:
            text = await self._native.request(method, encoded, seconds, md)
        else:
            call_id = self._native.request_via(completions._native, method, encoded, seconds, md)
            text = await completions.future(call_id)
        return json.loads(text)

    async def emit(self, event: str, value: Any = None) -> None:
        """Sends the one-way event ``event`` carrying ``value``."""
        if not isinstance(event, str):
            raise TypeError(f"event must be a str, not {type(event).__name__}")
        await self._native.emit(event, _dumps(value, f"the value of event `{event}`"))

    async def ping(self, timeout: float = 5.0) -> float:
        """One round trip; returns it in seconds."""
        return await self._native.ping(_timeout(timeout))

    async def open_stream(self, name: str, metadata: MetadataArg = None) -> Stream:
        """Opens the stream ``name`` (an :class:`XStream <Stream>`) towards the peer."""
        if not isinstance(name, str):
            raise TypeError(f"name must be a str, not {type(name).__name__}")
        return await self._native.open_stream(name, _metadata(metadata))

    async def open_message_stream(self, name: str, metadata: MetadataArg = None) -> "MessageStream":
        """Opens the stream ``name`` as a stream of JSON messages both ways (see
        :class:`MessageStream`)."""
        return MessageStream(await self.open_stream(name, metadata))

    def clock(self) -> Clock:
        """The clock synchronised with the peer's (``await clock.synced()`` first)."""
        return self._native.clock()

    def info(self) -> Dict[str, Any]:
        """Connection details: addresses, fingerprint, rtt, traffic counters, and ``zero_rtt``
        (as :attr:`Peer.zero_rtt`: ``"accepted"`` means the TLS session was resumed and its
        early data ran)."""
        return self._native.info()


class Peer(_Caller):
    """One connection, as a handler sees its caller (``ctx.peer``) or a server its clients."""

    __slots__ = ()

    def __init__(self, native: Any) -> None:
        self._native = native

    @property
    def address(self) -> str:
        """The peer's ``host:port``."""
        return self._native.address

    @property
    def connection_id(self) -> int:
        """The connection's id."""
        return self._native.connection_id

    @property
    def fingerprint(self) -> Optional[str]:
        """The peer's certificate fingerprint (64 hex digits of SHA-256), if it presented one."""
        return self._native.fingerprint

    @property
    def hello_metadata(self) -> Dict[str, str]:
        """The metadata of the peer's hello."""
        return dict(self._native.hello_metadata)

    def close(self, reason: str = "closed by the application") -> None:
        """Closes this connection."""
        self._native.close(reason)

    def is_closed(self) -> bool:
        """Whether the connection is closed."""
        return self._native.is_closed()

    async def closed(self) -> str:
        """Waits until the connection closes; returns why."""
        return await self._native.closed()

    @property
    def zero_rtt(self) -> str:
        """What became of 0-RTT on this connection: ``"not-attempted"``, ``"pending"`` (sent
        early, handshake not complete), ``"accepted"`` or ``"rejected"`` (all sent again after
        the handshake)."""
        return self._native.zero_rtt

    def __repr__(self) -> str:
        return f"<echostream.Peer {self.address} #{self.connection_id}>"


class Client(_Caller):
    """A connection to a server, made by :func:`connect`."""

    __slots__ = ()

    def __init__(self, native: Any) -> None:
        self._native = native

    def subscribe(self, event: str) -> "Subscription":
        """The events ``event`` the server sends: ``async for value in client.subscribe(...)``."""
        if not isinstance(event, str):
            raise TypeError(f"event must be a str, not {type(event).__name__}")
        return Subscription(self._native.subscribe(event))

    @property
    def peer(self) -> Peer:
        """The current connection's handle."""
        return Peer(self._native.peer())

    @property
    def remote_address(self) -> str:
        """The server's ``host:port``."""
        return self._native.remote_address

    @property
    def server_fingerprint(self) -> Optional[str]:
        """The server's certificate fingerprint."""
        return self._native.server_fingerprint

    def is_connected(self) -> bool:
        """Whether the connection is up."""
        return self._native.is_connected()

    def connection_events(self) -> "ConnectionEvents":
        """What happens to the connection from now on, as dicts (the keys of
        :meth:`Server.connection_events`): ``"disconnected"`` (with ``reason``) when the
        connection ends and, with ``reconnect=``, ``"connected"`` for each new connection.
        Ends after the last connection's end (no reconnection, :meth:`close`, or the reconnect
        policy gave up)."""
        return ConnectionEvents(self._native.connection_events())

    async def health(self, service: str = "") -> str:
        """The server's health status for ``service`` (``""``: the whole server):
        ``"SERVING"``, ``"NOT_SERVING"``, ``"UNKNOWN"`` or ``"SERVICE_UNKNOWN"``."""
        return await self._native.health(_service(service))

    def can_resume(self) -> bool:
        """Whether the process holds a TLS session ticket for the server, so a reconnection
        (``reconnect=``) or another :func:`connect` to the same address resumes the session
        and may send 0-RTT early data."""
        return self._native.can_resume()

    async def close(self) -> None:
        """Closes the connection gracefully."""
        await self._native.close()

    async def __aenter__(self) -> "Client":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"<echostream.Client {self.remote_address}>"


class Subscription:
    """An async iterator over the values of one event name."""

    __slots__ = ("_native",)

    def __init__(self, native: Any) -> None:
        self._native = native

    def __aiter__(self) -> "Subscription":
        return self

    async def __anext__(self) -> Any:
        text = await self._native.next()
        if text is None:
            raise StopAsyncIteration
        return json.loads(text)

    @property
    def dropped(self) -> int:
        """Events dropped because this subscription fell behind."""
        return self._native.dropped()


# ---------------------------------------------------------------------------------------------
# Handlers
# ---------------------------------------------------------------------------------------------


class Context:
    """What a handler, listener or stream handler gets about its call."""

    __slots__ = ("_native",)

    def __init__(self, native: Any) -> None:
        self._native = native

    @property
    def method(self) -> str:
        """The method, event or stream name."""
        return self._native.method

    @property
    def peer_address(self) -> str:
        """The caller's ``host:port``."""
        return self._native.peer_address

    @property
    def fingerprint(self) -> Optional[str]:
        """The caller's certificate fingerprint (mutual TLS), if any."""
        return self._native.fingerprint

    @property
    def metadata(self) -> Dict[str, str]:
        """The call's metadata."""
        return dict(self._native.metadata)

    @property
    def hello_metadata(self) -> Dict[str, str]:
        """The metadata of the caller's hello (name, version, ...)."""
        return dict(self._native.hello_metadata)

    @property
    def remaining(self) -> Optional[float]:
        """Seconds before the caller's deadline, if it set one."""
        return self._native.remaining

    @property
    def identity(self) -> Optional[str]:
        """Who the caller is (the name its token stands for on the server), or ``None``."""
        return self._native.identity

    @property
    def peer(self) -> Peer:
        """The caller's connection, for calls back to it."""
        return Peer(self._native.peer)


def _shape(name: str, fn: Callable[..., Any]) -> Tuple[bool, int, int, bool]:
    """(takes a context, required values, most values, takes *args)."""
    if not callable(fn):
        raise TypeError(f"the handler of `{name}` must be callable, not {type(fn).__name__}")
    params = list(inspect.signature(fn).parameters.values())
    takes_ctx = bool(params) and (
        params[0].name in ("ctx", "context") or params[0].annotation in (Context, "Context")
    )
    if takes_ctx:
        params = params[1:]
    positional = [
        p
        for p in params
        if p.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    ]
    var = any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in params)
    required = sum(1 for p in positional if p.default is inspect.Parameter.empty)
    return takes_ctx, required, len(positional), var


def _spread(name: str, value: Any, required: int, most: int, var: bool) -> List[Any]:
    if var:
        return list(value) if isinstance(value, list) else [value]
    if most == 0:
        return []
    if most == 1:
        return [value]
    if isinstance(value, list) and required <= len(value) <= most:
        return value
    if required <= 1:
        # A handler with optional parameters called with one value.
        return [value]
    want = f"{most}" if required == most else f"{required} to {most}"
    raise RemoteError(
        Code.BAD_PAYLOAD,
        f"`{name}` takes {want} arguments (a JSON array of {want} values), not {_dumps(value, 'value')[:100]}",
    )


async def _run_user(name: str, fn: Callable[..., Any], args: List[Any]) -> Any:
    try:
        out = fn(*args)
        if inspect.isawaitable(out):
            out = await out
        return out
    except RemoteError:
        raise
    except Exception as e:
        raise RemoteError(Code.APPLICATION, f"{type(e).__name__}: {e}") from e


def _handler_invoker(name: str, fn: Callable[..., Any]) -> Callable[[Any, bytes], Awaitable[bytes]]:
    takes_ctx, required, most, var = _shape(name, fn)

    async def invoke(ctx: Any, data: bytes) -> bytes:
        try:
            value = json.loads(data)
        except ValueError as e:
            raise RemoteError(Code.BAD_PAYLOAD, f"the argument of `{name}` is not JSON: {e}") from None
        args = _spread(name, value, required, most, var)
        if takes_ctx:
            args.insert(0, Context(ctx))
        out = await _run_user(name, fn, args)
        try:
            return json.dumps(out, separators=(",", ":"), allow_nan=False, default=_default).encode()
        except (TypeError, ValueError) as e:
            raise RemoteError(Code.INTERNAL, f"the result of `{name}` cannot travel as JSON: {e}") from None

    return invoke


def _listener_invoker(name: str, fn: Callable[..., Any]) -> Callable[[Any, bytes], Awaitable[None]]:
    takes_ctx, required, most, var = _shape(name, fn)

    async def invoke(ctx: Any, data: bytes) -> None:
        try:
            value = json.loads(data)
        except ValueError as e:
            raise RemoteError(Code.BAD_PAYLOAD, f"the value of `{name}` is not JSON: {e}") from None
        args = _spread(name, value, required, most, var)
        if takes_ctx:
            args.insert(0, Context(ctx))
        await _run_user(name, fn, args)

    return invoke


def _stream_invoker(name: str, fn: Callable[..., Any]) -> Callable[[Any, Stream], Awaitable[None]]:
    takes_ctx, _, _, _ = _shape(name, fn)

    async def invoke(ctx: Any, stream: Stream) -> None:
        args: List[Any] = [Context(ctx), stream] if takes_ctx else [stream]
        await _run_user(name, fn, args)

    return invoke


class AuthRequest:
    """What a server's ``authenticator`` sees of a connecting client: ``remote``
    (``host:port``), ``fingerprint`` (of its verified client certificate, if it presented
    one), ``token`` (what the client passed as ``token=``, if any) and ``metadata`` (its
    hello's, a dict)."""

    __slots__ = ("remote", "fingerprint", "token", "metadata")

    def __init__(self, remote: str, fingerprint: Optional[str], token: Optional[str],
                 metadata: Dict[str, str]) -> None:
        self.remote = remote
        self.fingerprint = fingerprint
        self.token = token
        self.metadata = metadata

    def __repr__(self) -> str:
        # Never print the token.
        return f"AuthRequest(remote={self.remote!r}, fingerprint={self.fingerprint!r})"


def _auth_invoker(fn: Callable[..., Any]) -> Callable[..., Awaitable[Optional[str]]]:
    if not callable(fn):
        raise TypeError(f"authenticator must be callable, not {type(fn).__name__}")

    async def invoke(remote: str, fingerprint: Optional[str], token: Optional[str],
                     metadata: List[Tuple[str, str]]) -> Optional[str]:
        request = AuthRequest(remote, fingerprint, token, dict(metadata))
        try:
            out = fn(request)
            if inspect.isawaitable(out):
                out = await out
        except RemoteError:
            raise
        except Exception as e:
            raise RemoteError(Code.UNAUTHENTICATED, str(e) or type(e).__name__) from None
        if out is not None and not isinstance(out, str):
            raise RemoteError(Code.INTERNAL, f"the authenticator returned a {type(out).__name__}, not a name (str) or None")
        return out

    return invoke


def _interceptor_invokers(interceptor: Any) -> Optional[List[Callable[..., Awaitable[None]]]]:
    if interceptor is None:
        return None
    functions = list(interceptor) if isinstance(interceptor, (list, tuple)) else [interceptor]
    out = []
    for fn in functions:
        if not callable(fn):
            raise TypeError(f"an interceptor must be callable, not {type(fn).__name__}")
        out.append(_interceptor_invoker(fn))
    return out


def _interceptor_invoker(fn: Callable[..., Any]) -> Callable[[Any, str], Awaitable[None]]:
    async def invoke(ctx: Any, kind: str) -> None:
        try:
            out = fn(Context(ctx), kind)
            if inspect.isawaitable(out):
                out = await out
        except RemoteError:
            raise
        except Exception as e:
            raise RemoteError(Code.PERMISSION_DENIED, f"`{ctx.method}` denied: {type(e).__name__}: {e}") from None
        if out is False:
            raise RemoteError(Code.PERMISSION_DENIED, f"`{ctx.method}` denied by an interceptor")

    return invoke


class Router:
    """Handlers, listeners and stream handlers one side serves to its peers.

    A :class:`Server` is a router; pass a router to :func:`connect` (``router=``) for the calls
    and events a server sends to its clients.

    A handler may be a plain or an ``async`` function. If its first parameter is named ``ctx``
    (or ``context``, or is annotated ``Context``) it gets the call's :class:`Context`. The other
    positional parameters take the value: one parameter gets it whole, several get the items of
    a JSON array (what a Rust caller sends for a tuple).
    """

    def __init__(self) -> None:
        self._handlers: Dict[str, Callable[..., Any]] = {}
        self._idempotent: set = set()
        self._listeners: Dict[str, Callable[..., Any]] = {}
        self._streams: Dict[str, Callable[..., Any]] = {}

    @staticmethod
    def _name(name: Any, what: str) -> str:
        if not isinstance(name, str) or not name:
            raise TypeError(f"the {what} name must be a non-empty str, not {name!r}")
        return name

    def handler(self, name: str, *, idempotent: bool = False) -> Callable[[F], F]:
        """Decorator: ``@router.handler("math.add")`` serves requests of that method.

        ``idempotent=True`` declares the handler safe to run twice for one call: a server with
        ``zero_rtt=True`` runs it for calls that arrive as 0-RTT early data (which an attacker
        can replay); other handlers refuse early calls, and the client sends them again after
        the handshake."""
        name = self._name(name, "method")

        def register(fn: F) -> F:
            self._handlers[name] = _handler_invoker(name, fn)
            if idempotent:
                self._idempotent.add(name)
            else:
                self._idempotent.discard(name)
            return fn

        return register

    def listener(self, name: str) -> Callable[[F], F]:
        """Decorator: ``@router.listener("user.logged_out")`` receives the events of that name."""
        name = self._name(name, "event")

        def register(fn: F) -> F:
            self._listeners[name] = _listener_invoker(name, fn)
            return fn

        return register

    def stream_handler(self, name: str) -> Callable[[F], F]:
        """Decorator: ``@router.stream_handler("audio.stream")`` runs once per stream of that
        name a peer opens, with the :class:`Stream`. An exception it raises is written on the
        stream's error half."""
        name = self._name(name, "stream")

        def register(fn: F) -> F:
            self._streams[name] = _stream_invoker(name, fn)
            return fn

        return register

    def _routes(self) -> Tuple[Any, ...]:
        return (
            list(self._handlers.items()),
            list(self._listeners.items()),
            list(self._streams.items()),
            sorted(self._idempotent),
        )


# ---------------------------------------------------------------------------------------------
# Connecting
# ---------------------------------------------------------------------------------------------


async def connect(
    addr: str,
    *,
    pin: Optional[Union[str, Sequence[str]]] = None,
    ca: Optional[str] = None,
    known_hosts: Optional[str] = None,
    insecure: bool = False,
    token: Optional[str] = None,
    timeout: Optional[float] = None,
    server_name: Optional[str] = None,
    cert: Optional[str] = None,
    key: Optional[str] = None,
    identity: Optional["Identity"] = None,
    router: Optional[Router] = None,
    hello: MetadataArg = None,
    call_timeout: Optional[float] = None,
    reconnect: Union[bool, "Reconnect", None] = None,
    zero_rtt: bool = True,
    resumption: bool = True,
    idempotent: Sequence[str] = (),
    idle_timeout: Optional[float] = None,
    keep_alive: Optional[float] = None,
    max_frame_size: Optional[int] = None,
    stream_options: Optional[Mapping[str, float]] = None,
    event_queue: Optional[int] = None,
    assembly_timeout: Optional[float] = None,
    max_assembly_bytes: Optional[int] = None,
    interceptor: Union[Callable[..., Any], Sequence[Callable[..., Any]], None] = None,
    transport: Optional[Mapping[str, Any]] = None,
) -> Client:
    """Connects to the server at ``addr`` (``"host:port"``).

    Trust, in order: ``insecure=True`` accepts any certificate (never outside tests);
    ``pin="sha256:..."`` (or a list) accepts only those fingerprints; ``ca="ca.pem"`` checks the
    chain against that CA (and the name in it against ``server_name``, by default the host part
    of ``addr``); ``known_hosts="file"`` trusts on first use with that file; by default the
    user's known-hosts file, as the Rust client and the ``echostream`` tool do.

    ``token`` is sent as credentials. For mutual TLS the client presents ``cert``/``key`` (PEM
    files, for example issued by the CA the server trusts) or ``identity`` (an
    :class:`Identity`, for example ``Identity.persistent("device")`` whose fingerprint the
    server pins). ``router`` serves the calls, events and streams the server sends; ``hello``
    is metadata sent in the hello.

    Options (the Rust ``ClientBuilder``'s): ``timeout`` bounds the connection attempt;
    ``call_timeout`` is the default deadline of calls (30 s; ``0``: calls carry no
    deadline unless they set one, and the server's handler timeout applies); ``reconnect=True`` (or a
    :class:`Reconnect`) re-establishes a dropped connection; ``resumption`` and ``zero_rtt``
    (both on) resume TLS sessions and send the calls to the ``idempotent`` methods as 0-RTT
    early data to servers that allow it (the session tickets are kept in memory for the whole
    process, so a later ``connect()`` to the same address resumes too, whenever its trust
    settings and client certificate are the same); ``idle_timeout`` (30 s) and ``keep_alive`` (10 s) are
    the transport's; ``max_frame_size`` is the largest frame accepted from the server (32 MiB).
    ``stream_options`` sets stream limits and timeouts by the names of the Rust
    ``StreamOptions`` fields: ``accept_queue`` (64), ``decision_queue`` (64),
    ``pairing_timeout`` (10 s), ``open_timeout`` (30 s), ``decision_timeout`` (10 s),
    ``max_error_size`` (64 KiB), ``max_message_size`` (16 MiB), ``max_read_to_end`` (256 MiB),
    ``max_streams_per_connection`` (16,384). ``event_queue`` is how many of the server's
    events may wait for this side's listeners (16,384; announced as event credit, so the
    server's emits wait beyond it); ``assembly_timeout`` (10 s) and ``max_assembly_bytes``
    (64 MiB) bound the large messages from the server being received at once.
    ``interceptor`` (a function or a list) runs before each call, event and stream the server
    sends this client (see :class:`Server`). ``transport`` sets QUIC transport options by the
    names of the Rust ``TransportOptions`` fields, over their defaults (``idle_timeout`` and
    ``keep_alive`` given separately win): ``idle_timeout`` (30 s), ``keep_alive`` (10 s,
    ``None``: off), ``max_bidi_streams``, ``max_uni_streams``, ``socket_buffer`` (4 MiB),
    ``stream_receive_window`` (256 KiB: raise it for one fast bulk stream),
    ``receive_window`` (16 MiB), ``reordering_threshold`` (3), ``loss_time_threshold``
    (1.125 round trips), ``congestion`` (``"cubic"``, ``"newreno"`` or ``"bbr"``),
    ``call_priority`` (``True``: small calls go before bulk data). All times are in seconds.
    """
    if not isinstance(addr, str):
        raise TypeError(f"addr must be a str such as '127.0.0.1:5000', not {type(addr).__name__}")
    return await _connect(addr, None, None, pin=pin, ca=ca, known_hosts=known_hosts,
                          insecure=insecure, token=token, timeout=timeout,
                          server_name=server_name, cert=cert, key=key, identity=identity,
                          router=router, hello=hello, call_timeout=call_timeout,
                          reconnect=reconnect, zero_rtt=zero_rtt, resumption=resumption,
                          idempotent=idempotent, idle_timeout=idle_timeout,
                          keep_alive=keep_alive, max_frame_size=max_frame_size,
                          stream_options=stream_options, event_queue=event_queue,
                          assembly_timeout=assembly_timeout,
                          max_assembly_bytes=max_assembly_bytes, interceptor=interceptor,
                          transport=transport)


async def discover(
    name: str,
    *,
    timeout: float = 3.0,
    interfaces: Union[str, Sequence[str]] = "all",
    connect_timeout: Optional[float] = None,
    **options: Any,
) -> Client:
    """Finds an instance of service ``name`` on the LAN (mDNS, for up to ``timeout`` seconds)
    and connects to it. By default the fingerprint the instance announces is pinned; the trust
    arguments of :func:`connect` replace that (use them where an attacker on the LAN is a
    concern). ``interfaces`` is ``"all"``, ``"loopback"`` or a list of interface names;
    ``connect_timeout`` bounds the connection attempt; every other keyword argument of
    :func:`connect` applies. Raises :class:`DiscoveryTimeoutError` naming what was seen if none
    answers."""
    if not isinstance(name, str) or not name:
        raise TypeError(f"name must be a non-empty str, not {name!r}")
    return await _connect(None, name, _timeout(timeout), interfaces=_interfaces(interfaces),
                          timeout=connect_timeout, **options)


def _interfaces(interfaces: Union[str, Sequence[str]]) -> Union[str, List[str]]:
    if isinstance(interfaces, str):
        return interfaces
    names = list(interfaces)
    if not all(isinstance(n, str) for n in names):
        raise TypeError('interfaces must be "all", "loopback" or a list of interface names (str)')
    return names


def _number(value: Any, name: str, kind: type = float) -> Any:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float) if kind is float else int):
        raise TypeError(f"{name} must be {'a number' if kind is float else 'an int'}, not {type(value).__name__}")
    return kind(value)


def _stream_options(options: Optional[Mapping[str, float]]) -> Optional[Dict[str, float]]:
    if options is None:
        return None
    if not isinstance(options, Mapping):
        raise TypeError(f"stream_options must be a dict of option name to number, not {type(options).__name__}")
    out = {}
    for k, v in options.items():
        if not isinstance(k, str):
            raise TypeError(f"stream_options keys must be str, not {type(k).__name__}")
        out[k] = _number(v, f"stream_options[{k!r}]")
    return out


def _transport(options: Optional[Mapping[str, Any]]) -> Optional[Dict[str, Any]]:
    if options is None:
        return None
    if not isinstance(options, Mapping):
        raise TypeError(f"transport must be a dict of option name to value, not {type(options).__name__}")
    if not all(isinstance(k, str) for k in options):
        raise TypeError("transport keys must be str")
    return dict(options)


def _service(service: Any) -> str:
    if not isinstance(service, str):
        raise TypeError(f"service must be a str (\"\": the whole server), not {type(service).__name__}")
    return service


def _strs(values: Any, name: str) -> List[str]:
    if isinstance(values, str):
        return [values]
    out = list(values)
    if not all(isinstance(v, str) for v in out):
        raise TypeError(f"{name} must be a str or a list of str")
    return out


async def _connect(
    addr: Optional[str],
    service: Optional[str],
    discover_timeout: Optional[float],
    *,
    pin: Optional[Union[str, Sequence[str]]] = None,
    ca: Optional[str] = None,
    known_hosts: Optional[str] = None,
    insecure: bool = False,
    token: Optional[str] = None,
    timeout: Optional[float] = None,
    server_name: Optional[str] = None,
    cert: Optional[str] = None,
    key: Optional[str] = None,
    identity: Optional["Identity"] = None,
    router: Optional[Router] = None,
    hello: MetadataArg = None,
    interfaces: Optional[Union[str, List[str]]] = None,
    call_timeout: Optional[float] = None,
    reconnect: Union[bool, "Reconnect", None] = None,
    zero_rtt: bool = True,
    resumption: bool = True,
    idempotent: Sequence[str] = (),
    idle_timeout: Optional[float] = None,
    keep_alive: Optional[float] = None,
    max_frame_size: Optional[int] = None,
    stream_options: Optional[Mapping[str, float]] = None,
    event_queue: Optional[int] = None,
    assembly_timeout: Optional[float] = None,
    max_assembly_bytes: Optional[int] = None,
    interceptor: Union[Callable[..., Any], Sequence[Callable[..., Any]], None] = None,
    transport: Optional[Mapping[str, Any]] = None,
) -> Client:
    pins = None if pin is None else _strs(pin, "pin")
    if router is not None and not isinstance(router, Router):
        raise TypeError(f"router must be an echostream.Router, not {type(router).__name__}")
    if identity is not None and not isinstance(identity, Identity):
        raise TypeError(f"identity must be an echostream.Identity, not {type(identity).__name__}")
    if reconnect is True:
        reconnect = Reconnect()
    elif reconnect is False:
        reconnect = None
    if reconnect is not None and not isinstance(reconnect, Reconnect):
        raise TypeError(f"reconnect must be True or an echostream.Reconnect, not {type(reconnect).__name__}")
    native = await _native.connect(
        addr,
        pins=pins,
        ca=ca,
        known_hosts=known_hosts,
        insecure=bool(insecure),
        token=token,
        timeout=_timeout(timeout),
        server_name=server_name,
        cert=cert,
        key=key,
        routes=router._routes() if router is not None else None,
        hello=_metadata(hello, "hello"),
        discover=service,
        discover_timeout=discover_timeout,
        interfaces=interfaces,
        identity=identity._spec if identity is not None else None,
        call_timeout=_number(call_timeout, "call_timeout"),
        reconnect=reconnect._spec if reconnect is not None else None,
        zero_rtt=bool(zero_rtt),
        resumption=bool(resumption),
        idempotent=_strs(idempotent, "idempotent"),
        idle_timeout=_number(idle_timeout, "idle_timeout"),
        keep_alive=_number(keep_alive, "keep_alive"),
        max_frame_size=_number(max_frame_size, "max_frame_size", int),
        stream_options=_stream_options(stream_options),
        completions=_native_completions(),
        event_queue=_number(event_queue, "event_queue", int),
        assembly_timeout=_number(assembly_timeout, "assembly_timeout"),
        max_assembly_bytes=_number(max_assembly_bytes, "max_assembly_bytes", int),
        interceptors=_interceptor_invokers(interceptor),
        transport=_transport(transport),
    )
    return Client(native)


class Reconnect:
    """How a client re-establishes a dropped connection (Rust ``ReconnectPolicy``).

    After the connection ends (other than by :meth:`Client.close`), the client reconnects to
    the same address with the same options, waiting ``initial_backoff`` seconds, then twice as
    long after each failure up to ``max_backoff``; it gives up after ``max_attempts`` failures
    in a row (``None``: never). Handlers and subscriptions carry over. Calls made while
    disconnected fail at once with :class:`ConnectionClosedError`, unless
    ``wait_for_connection``: then they wait for the new connection, up to their timeout. A
    call in flight when the connection drops fails; it is never sent again.
    """

    __slots__ = ("_spec",)

    def __init__(
        self,
        initial_backoff: float = 0.1,
        max_backoff: float = 5.0,
        max_attempts: Optional[int] = None,
        wait_for_connection: bool = False,
    ) -> None:
        self._spec = (
            _number(initial_backoff, "initial_backoff"),
            _number(max_backoff, "max_backoff"),
            _number(max_attempts, "max_attempts", int),
            bool(wait_for_connection),
        )

    def __repr__(self) -> str:
        i, m, a, w = self._spec
        return f"Reconnect(initial_backoff={i}, max_backoff={m}, max_attempts={a}, wait_for_connection={w})"


# ---------------------------------------------------------------------------------------------
# Serving
# ---------------------------------------------------------------------------------------------


class Identity:
    """A TLS identity: a server's (the certificate clients pin), or a client's for mutual TLS
    (``connect(..., identity=...)``, the certificate a server pins or checks against its CA)."""

    __slots__ = ("_spec",)

    def __init__(self, spec: Tuple[str, Optional[str], Optional[str]]) -> None:
        self._spec = spec

    @classmethod
    def persistent(cls, name: str) -> "Identity":
        """A key kept under the echostream home (``$ECHOSTREAM_HOME``), made on first use: the
        same fingerprint on every start."""
        return cls(("persistent", name, None))

    @classmethod
    def ephemeral(cls) -> "Identity":
        """A fresh key for this process only."""
        return cls(("ephemeral", None, None))

    @classmethod
    def pem(cls, cert_chain: str, private_key: str) -> "Identity":
        """A certificate chain and key from PEM files (for example signed by your CA)."""
        return cls(("pem", cert_chain, private_key))

    def fingerprint(self) -> str:
        """The certificate's fingerprint (64 hex digits of SHA-256), what a peer pins: loads the identity
        (a persistent one is made on first use). ``ValueError`` for an ephemeral identity,
        which is new each time it is loaded."""
        return _native.identity_fingerprint(self._spec)

    def __repr__(self) -> str:
        return f"Identity{self._spec!r}"


class ClientAuth:
    """Whether a server asks clients for a certificate (mutual TLS), and which it trusts (Rust
    ``ClientAuth`` with ``ClientCertTrust``): ``ca="ca.pem"`` trusts certificates that CA issued
    (for client authentication), ``pins=["sha256:..."]`` only those fingerprints (self-signed
    clients, such as an :class:`Identity` made by the client). Give exactly one of them.

    With :meth:`required` a client without a trusted certificate cannot connect: its
    :func:`connect` raises :class:`RejectedError` naming the client certificate. With
    :meth:`optional` a client without one is admitted anonymously; one with an untrusted
    certificate is refused. Handlers see the client's fingerprint in ``ctx.fingerprint``.
    """

    __slots__ = ("_spec",)

    def __init__(self, required: bool, ca: Optional[str], pins: Optional[Union[str, Sequence[str]]]) -> None:
        if (ca is None) == (pins is None):
            raise TypeError("ClientAuth: give either ca= (a PEM file) or pins= (fingerprints)")
        if ca is not None and not isinstance(ca, str):
            raise TypeError(f"ca must be a path (str), not {type(ca).__name__}")
        self._spec = (bool(required), ca, None if pins is None else _strs(pins, "pins"))

    @classmethod
    def required(cls, *, ca: Optional[str] = None, pins: Optional[Union[str, Sequence[str]]] = None) -> "ClientAuth":
        """Every client must present a certificate trusted by ``ca`` or ``pins``."""
        return cls(True, ca, pins)

    @classmethod
    def optional(cls, *, ca: Optional[str] = None, pins: Optional[Union[str, Sequence[str]]] = None) -> "ClientAuth":
        """Clients may present a certificate; if they do, ``ca`` or ``pins`` must trust it."""
        return cls(False, ca, pins)

    def __repr__(self) -> str:
        required, ca, pins = self._spec
        kind = "required" if required else "optional"
        return f"ClientAuth.{kind}(ca={ca!r})" if ca is not None else f"ClientAuth.{kind}(pins={pins!r})"


class Server(Router):
    """A server: ``Server(bind="0.0.0.0:5000", identity=Identity.persistent("audio"))``.

    Register handlers with the decorators of :class:`Router`, then ``await server.start()``
    (or ``async with server:``). Handlers run on the event loop that started the server.
    ``discovery="AudioService"`` announces the server on the LAN over mDNS (on
    ``discovery_interfaces``: ``"all"``, ``"loopback"`` or a list of interface names).
    ``tokens={"secret": "alice"}`` accepts clients that connect with ``token="secret"`` as
    ``alice`` (``ctx.identity``); with ``require_token=True`` clients without a known token are
    refused. ``client_auth`` (a :class:`ClientAuth`) asks clients for certificates (mutual TLS).

    ``approve_connections=True`` hands each incoming connection, after its TLS handshake and
    hello, to the application: ``async for request in server.connection_requests()`` then
    ``request.approve()`` or ``request.reject(reason)`` (the client's :func:`connect` raises
    :class:`RejectedError` with the reason). At most 64 (or the int given) wait for a decision;
    beyond that the connection is rejected, and one not decided within ``handshake_timeout`` is
    closed (:class:`ConnectionClosedError`), each with a reason that says so; a request dropped
    undecided is rejected.

    Limits and timeouts (the Rust ``ServerBuilder``'s, in seconds): ``max_connections``
    (10,000), ``handshake_timeout`` (10 s), ``shutdown_grace`` (how long :meth:`close` lets calls
    finish, 10 s), ``idle_timeout`` (30 s), ``max_frame_size`` (32 MiB),
    ``max_concurrent_requests`` per connection (1024). ``zero_rtt=True`` accepts 0-RTT early
    data from returning clients, for handlers that are safe to run twice only (not with
    ``client_auth``). ``stream_options`` sets stream limits and timeouts (see :func:`connect`).

    Protection: ``rate_limit`` is the calls per second (requests, events, stream opens; burst
    as large) one connection may make, ``method_rate_limits={"admin.*": 1}`` the same per name
    pattern (``"prefix.*"``, an exact name, or ``"*"``); over a limit a call fails with
    :class:`RateLimitedError` and the connection stays usable. ``default_handler_timeout``
    bounds handlers whose caller set no deadline (300 s); ``max_connections_per_address``
    (1000) caps the connections from one IP address, refused before any TLS work.
    ``event_queue`` (16,384 per connection), ``assembly_timeout`` and ``max_assembly_bytes``
    bound what a client can make the server hold; ``transport`` sets QUIC transport options
    (see :func:`connect`).

    ``authenticator`` decides who a connecting client is, after its hello and before any call
    runs: a function (plain or ``async``, run on the server's loop) given an
    :class:`AuthRequest` that returns the identity's name (``ctx.identity`` in handlers), or
    ``None`` or raises to refuse the client (its :func:`connect` raises
    :class:`RejectedError` with the exception's text). It runs within ``handshake_timeout``;
    not together with ``tokens``.

    ``interceptor`` (a function or a list of them, plain or ``async``) runs before every
    request, event and stream open, in order, with the call's :class:`Context` and its kind
    (``"request"``, ``"event"`` or ``"stream"``): returning ``False`` or raising denies it (the
    caller gets :class:`PermissionDeniedError`, or the code of a :class:`RemoteError` raised
    on purpose) and the handler never runs. An interceptor costs a round trip to the event
    loop per call.

    Health: every server answers the health service (``echostream.health``, what
    :meth:`Client.health` and the ``echostream`` tool ask); :meth:`set_serving` and
    :meth:`set_not_serving` change what it says per service name.
    """

    def __init__(
        self,
        bind: str = "0.0.0.0:5000",
        *,
        identity: Optional[Identity] = None,
        discovery: Optional[str] = None,
        discovery_interfaces: Union[str, Sequence[str]] = "all",
        tokens: Optional[Mapping[str, str]] = None,
        require_token: bool = False,
        client_auth: Optional[ClientAuth] = None,
        approve_connections: Union[bool, int] = False,
        max_connections: Optional[int] = None,
        handshake_timeout: Optional[float] = None,
        shutdown_grace: Optional[float] = None,
        zero_rtt: bool = False,
        idle_timeout: Optional[float] = None,
        max_frame_size: Optional[int] = None,
        max_concurrent_requests: Optional[int] = None,
        stream_options: Optional[Mapping[str, float]] = None,
        rate_limit: Optional[int] = None,
        method_rate_limits: Optional[Mapping[str, int]] = None,
        default_handler_timeout: Optional[float] = None,
        max_connections_per_address: Optional[int] = None,
        event_queue: Optional[int] = None,
        assembly_timeout: Optional[float] = None,
        max_assembly_bytes: Optional[int] = None,
        authenticator: Optional[Callable[[AuthRequest], Any]] = None,
        interceptor: Union[Callable[..., Any], Sequence[Callable[..., Any]], None] = None,
        transport: Optional[Mapping[str, Any]] = None,
    ) -> None:
        super().__init__()
        if not isinstance(bind, str):
            raise TypeError(f"bind must be a str such as '0.0.0.0:5000', not {type(bind).__name__}")
        if identity is not None and not isinstance(identity, Identity):
            raise TypeError(f"identity must be an echostream.Identity, not {type(identity).__name__}")
        if discovery is not None and not isinstance(discovery, str):
            raise TypeError(f"discovery must be a service name (str), not {type(discovery).__name__}")
        self._bind = bind
        self._identity = identity
        self._discovery = discovery
        self._interfaces = _interfaces(discovery_interfaces)
        self._tokens = _metadata(tokens, "tokens")
        self._require_token = bool(require_token)
        if client_auth is not None and not isinstance(client_auth, ClientAuth):
            raise TypeError(f"client_auth must be an echostream.ClientAuth, not {type(client_auth).__name__}")
        if approve_connections is True:
            queue: Optional[int] = 64
        elif approve_connections is False:
            queue = None
        else:
            queue = _number(approve_connections, "approve_connections", int)
        self._options = dict(
            client_auth=client_auth._spec if client_auth is not None else None,
            approve_connections=queue,
            max_connections=_number(max_connections, "max_connections", int),
            handshake_timeout=_number(handshake_timeout, "handshake_timeout"),
            shutdown_grace=_number(shutdown_grace, "shutdown_grace"),
            zero_rtt=bool(zero_rtt),
            idle_timeout=_number(idle_timeout, "idle_timeout"),
            max_frame_size=_number(max_frame_size, "max_frame_size", int),
            max_concurrent_requests=_number(max_concurrent_requests, "max_concurrent_requests", int),
            stream_options=_stream_options(stream_options),
            rate_limit=_number(rate_limit, "rate_limit", int),
            method_rate_limits=None if method_rate_limits is None else [
                (_strs(k, "method_rate_limits keys")[0], _number(v, f"method_rate_limits[{k!r}]", int))
                for k, v in dict(method_rate_limits).items()
            ],
            default_handler_timeout=_number(default_handler_timeout, "default_handler_timeout"),
            max_connections_per_address=_number(max_connections_per_address, "max_connections_per_address", int),
            event_queue=_number(event_queue, "event_queue", int),
            assembly_timeout=_number(assembly_timeout, "assembly_timeout"),
            max_assembly_bytes=_number(max_assembly_bytes, "max_assembly_bytes", int),
            authenticator=None if authenticator is None else _auth_invoker(authenticator),
            interceptors=_interceptor_invokers(interceptor),
            transport=_transport(transport),
        )
        self._native: Any = None

    async def start(self) -> "Server":
        """Binds the socket and starts serving; handlers run on the running loop."""
        if self._native is not None:
            raise RuntimeError("the server is already started")
        spec = self._identity._spec if self._identity is not None else ("default", None, None)
        self._native = _native.start_server(
            self._bind, spec, self._routes(), self._discovery, self._interfaces,
            self._tokens, self._require_token, completions=_native_completions(), **self._options,
        )
        return self

    def _running(self) -> Any:
        if self._native is None:
            raise RuntimeError("the server is not started (await server.start())")
        return self._native

    @property
    def address(self) -> str:
        """The bound ``host:port``."""
        return self._running().address

    @property
    def fingerprint(self) -> str:
        """The certificate fingerprint clients pin (64 hex digits of SHA-256)."""
        return self._running().fingerprint

    def peers(self) -> List[Peer]:
        """The connected clients."""
        return [Peer(p) for p in self._running().peers()]

    def set_serving(self, service: str = "") -> None:
        """Marks ``service`` (``""``: the whole server) ``SERVING`` in the health service."""
        self._running().set_serving(_service(service))

    def set_not_serving(self, service: str = "") -> None:
        """Marks ``service`` (``""``: the whole server) ``NOT_SERVING``: health probes and
        watchers see it, and balanced clients take this server out of rotation for it."""
        self._running().set_not_serving(_service(service))

    def health(self, service: str = "") -> str:
        """The health status of ``service``: ``"SERVING"``, ``"NOT_SERVING"``, ``"UNKNOWN"``
        or ``"SERVICE_UNKNOWN"`` (none was set; the whole server starts ``SERVING``)."""
        return self._running().health(_service(service))

    async def broadcast(self, event: str, value: Any = None) -> int:
        """Sends ``event`` to every client; returns how many it was queued for."""
        if not isinstance(event, str):
            raise TypeError(f"event must be a str, not {type(event).__name__}")
        return await self._running().broadcast(event, _dumps(value, f"the value of event `{event}`"))

    def subscribe(self, event: str) -> Subscription:
        """The events ``event`` clients send, as an async iterator (besides any listener)."""
        return Subscription(self._running().subscribe(event))

    def accept(self, name: str) -> "Incoming":
        """``async for peer, stream in server.accept("audio.stream")``: the streams of that name
        clients open (for names without a stream handler). Streams are taken from the moment
        ``accept`` is called."""
        if not isinstance(name, str):
            raise TypeError(f"name must be a str, not {type(name).__name__}")
        return Incoming(self._running().accept(name))

    def connection_events(self) -> "ConnectionEvents":
        """Connected / disconnected notifications from now on, as dicts (``event``,
        ``remote``, ``connection_id``, ``fingerprint``, ``reason``, traffic counters)."""
        return ConnectionEvents(self._running().connection_events())

    def connection_requests(self) -> "ConnectionRequests":
        """``async for request in server.connection_requests()``: the connections waiting for a
        decision (the server was made with ``approve_connections``). Can be called once."""
        return ConnectionRequests(self._running().connection_requests())

    async def close(self) -> None:
        """Stops accepting, lets running calls finish, and returns once the server stopped."""
        if self._native is not None:
            await self._native.close()

    async def __aenter__(self) -> "Server":
        if self._native is None:
            await self.start()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()


class Incoming:
    """An async iterator of ``(Peer, Stream)``: the streams of one name peers open."""

    __slots__ = ("_native",)

    def __init__(self, native: Any) -> None:
        self._native = native

    def __aiter__(self) -> "Incoming":
        return self

    async def __anext__(self) -> Tuple[Peer, Stream]:
        item = await self._native.next()
        if item is None:
            raise StopAsyncIteration
        peer, stream = item
        return Peer(peer), stream


class ConnectionRequest:
    """One incoming connection waiting for the application's decision: ``remote``
    (``host:port``), ``fingerprint`` (its client certificate's, if any), ``metadata`` (its
    hello's). Call :meth:`approve` or :meth:`reject` once. A request dropped undecided is
    rejected, but only when Python frees it (which a reference cycle can delay): decide
    explicitly."""

    __slots__ = ("_native",)

    def __init__(self, native: Any) -> None:
        self._native = native

    @property
    def remote(self) -> str:
        """The client's ``host:port``."""
        return self._native.remote

    @property
    def fingerprint(self) -> Optional[str]:
        """The client certificate's fingerprint, if it presented one."""
        return self._native.fingerprint

    @property
    def metadata(self) -> Dict[str, str]:
        """The metadata of the client's hello (``hello=`` of :func:`connect`)."""
        return dict(self._native.metadata)

    def approve(self) -> None:
        """Admits the connection."""
        self._native.approve()

    def reject(self, reason: str) -> None:
        """Refuses the connection; the client's :func:`connect` raises :class:`RejectedError`
        with ``reason``."""
        if not isinstance(reason, str):
            raise TypeError(f"reason must be a str, not {type(reason).__name__}")
        self._native.reject(reason)

    def __repr__(self) -> str:
        return f"<echostream.ConnectionRequest from {self.remote}>"


class ConnectionRequests:
    """An async iterator of :class:`ConnectionRequest`; ends when the server stops."""

    __slots__ = ("_native",)

    def __init__(self, native: Any) -> None:
        self._native = native

    def __aiter__(self) -> "ConnectionRequests":
        return self

    async def __anext__(self) -> ConnectionRequest:
        item = await self._native.next()
        if item is None:
            raise StopAsyncIteration
        return ConnectionRequest(item)


class ConnectionEvents:
    """An async iterator of connection events (dicts)."""

    __slots__ = ("_native",)

    def __init__(self, native: Any) -> None:
        self._native = native

    def __aiter__(self) -> "ConnectionEvents":
        return self

    async def __anext__(self) -> Dict[str, Any]:
        item = await self._native.next()
        if item is None:
            raise StopAsyncIteration
        return item


class MessageStream:
    """A stream of JSON values both ways, framed as the Rust typed streams are (a Rust
    ``StreamReceiver<T>`` / ``StreamSender`` with the JSON codec is the other end).

    ``MessageStream(stream)`` turns an accepted :class:`Stream` into one (its byte operations
    are gone from then on); ``await client.open_message_stream(name)`` opens one.
    ``async for value in messages`` reads until the peer finishes.
    """

    __slots__ = ("_native",)

    def __init__(self, stream: Stream) -> None:
        if not isinstance(stream, Stream):
            raise TypeError(f"stream must be an echostream.Stream, not {type(stream).__name__}")
        self._native = stream.messages()

    async def send(self, value: Any) -> None:
        """Sends one value."""
        await self._native.send(_dumps(value, "the message"))

    async def recv(self) -> Any:
        """The next value; raises ``EOFError`` once the peer finished."""
        text = await self._native.recv()
        if text is None:
            raise EOFError("the peer finished its messages")
        return json.loads(text)

    async def finish(self) -> None:
        """Ends this side's messages (receiving goes on)."""
        await self._native.finish()

    async def fail(self, code: int, message: str) -> None:
        """Fails the stream with a status (the acceptor writes it on the error half)."""
        await self._native.fail(code, message)

    def __aiter__(self) -> "MessageStream":
        return self

    async def __anext__(self) -> Any:
        text = await self._native.recv()
        if text is None:
            raise StopAsyncIteration
        return json.loads(text)
