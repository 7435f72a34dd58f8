"""The exception hierarchy mirrors echostream::Error."""

import builtins

import pytest

import echostream


def test_every_error_is_an_echostream_error():
    for name in echostream._errors.__all__:
        cls = getattr(echostream, name)
        if name != "Code":
            assert issubclass(cls, echostream.EchoStreamError), name


@pytest.mark.parametrize(
    "cls, also",
    [
        (echostream.TimeoutError, builtins.TimeoutError),
        (echostream.DiscoveryTimeoutError, builtins.TimeoutError),
        (echostream.StreamTimeoutError, builtins.TimeoutError),
        (echostream.ConnectError, ConnectionError),
        (echostream.RejectedError, ConnectionError),
        (echostream.ConnectionClosedError, ConnectionError),
        (echostream.StreamClosedError, ConnectionError),
        (echostream.ConfigError, ValueError),
        (echostream.TransportError, OSError),
    ],
)
def test_builtin_bases(cls, also):
    assert issubclass(cls, also)


def test_remote_error_keeps_code_and_message():
    e = echostream.RemoteError(1001, "no such track")
    assert (e.code, e.message, str(e)) == (1001, "no such track", "no such track")
    with pytest.raises(TypeError, match="code"):
        echostream.RemoteError("1001", "x")
    with pytest.raises(TypeError, match="message"):
        echostream.RemoteError(1001, 5)
