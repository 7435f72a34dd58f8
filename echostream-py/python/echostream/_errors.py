"""The exceptions of echostream: one class per kind of ``echostream::Error``.

Every exception derives from :class:`EchoStreamError`. Timeouts are also the built-in
:class:`TimeoutError`; failures to reach a peer and lost connections are also the built-in
:class:`ConnectionError`. The message is the Rust error's text, which names the method, the
address or the limit involved.
"""

from __future__ import annotations

import builtins
from typing import Optional

__all__ = [
    "Code",
    "EchoStreamError",
    "ConnectError",
    "TrustError",
    "RejectedError",
    "TimeoutError",
    "DiscoveryTimeoutError",
    "CancelledError",
    "RemoteError",
    "UnknownMethodError",
    "BadPayloadError",
    "RateLimitedError",
    "PermissionDeniedError",
    "UnauthenticatedError",
    "ConnectionClosedError",
    "FrameTooLargeError",
    "ProtocolError",
    "ConfigError",
    "StreamError",
    "StreamClosedError",
    "StreamTimeoutError",
    "TransportError",
    "DiscoveryError",
]


class Code:
    """Status codes of remote errors (``echostream::Code``); 1000 and up belong to applications."""

    INTERNAL = 1
    UNKNOWN_METHOD = 2
    BAD_PAYLOAD = 3
    DEADLINE_EXCEEDED = 4
    CANCELLED = 5
    HANDLER_PANICKED = 6
    UNAVAILABLE = 7
    RESOURCE_EXHAUSTED = 8
    PERMISSION_DENIED = 9
    UNAUTHENTICATED = 10
    RATE_LIMITED = 11
    RESPONSE_TOO_LARGE = 12
    EARLY_DATA_REFUSED = 13
    APPLICATION = 1000


class EchoStreamError(Exception):
    """Base class of every echostream error.

    ``method`` names the method or event a call error is about (``None`` otherwise).
    """

    method: Optional[str] = None


class ConnectError(EchoStreamError, ConnectionError):
    """The connection could not be established (unreachable address, handshake timeout)."""


class TrustError(EchoStreamError):
    """The peer's identity was not trusted (pin mismatch, changed known host, bad chain), or TLS
    could not be set up."""


class RejectedError(EchoStreamError, ConnectionError):
    """The server refused the connection (policy, authentication, capacity)."""


class TimeoutError(EchoStreamError, builtins.TimeoutError):  # noqa: A001 - mirrors the Rust name
    """A call's deadline passed."""


class DiscoveryTimeoutError(TimeoutError):
    """No instance of the service answered in time."""


class CancelledError(EchoStreamError):
    """The call was cancelled by the peer."""


class RemoteError(EchoStreamError):
    """The peer's handler failed: ``code`` and ``message`` are its status.

    Raise it from a handler to answer with a code of your own
    (``raise RemoteError(1001, "no such track")``); any other exception a handler raises reaches
    the caller as a ``RemoteError`` with code ``Code.APPLICATION`` and the exception's text.
    """

    def __init__(
        self,
        code: int,
        message: str,
        method: Optional[str] = None,
        display: Optional[str] = None,
    ) -> None:
        if not isinstance(code, int) or isinstance(code, bool) or not 0 <= code < 2**32:
            raise builtins.TypeError(f"code must be an int from 0 to 2**32-1, not {code!r}")
        if not isinstance(message, str):
            raise builtins.TypeError(f"message must be a str, not {type(message).__name__}")
        super().__init__(display if display is not None else message)
        self.code = code
        self.message = message
        self.method = method


class UnknownMethodError(EchoStreamError):
    """The peer has no handler under that name."""


class BadPayloadError(EchoStreamError):
    """The arguments or the result did not decode on the other side."""


class RateLimitedError(EchoStreamError):
    """The peer rate-limited the call."""


class PermissionDeniedError(EchoStreamError):
    """The peer denied the call."""


class UnauthenticatedError(EchoStreamError):
    """The call needs credentials the connection did not present."""


class ConnectionClosedError(EchoStreamError, ConnectionError):
    """The connection closed (every pending call fails with it)."""


class FrameTooLargeError(EchoStreamError):
    """A message exceeded the peer's frame limit."""


class ProtocolError(EchoStreamError):
    """The peer broke the protocol."""


class ConfigError(EchoStreamError, ValueError):
    """Invalid configuration (bad address, bad option)."""


class StreamError(EchoStreamError):
    """A stream operation failed (its state refused it, the peer reset it, ...)."""


class StreamClosedError(StreamError, ConnectionError):
    """The connection of a stream was lost."""


class StreamTimeoutError(StreamError, TimeoutError):
    """A stream operation (opening and pairing, a timed read) ran out of time."""


class TransportError(EchoStreamError, OSError):
    """A socket-level failure."""


class DiscoveryError(EchoStreamError):
    """mDNS discovery failed."""
