"""Closing HTTP connections that never send a whole request head (uvicorn does not).

uvicorn times out a keep-alive connection only *after* a response (``timeout_keep_alive``); a
connection that sends nothing, or a few bytes of a head and then nothing, stays open for ever,
so enough of them exhaust the server's file descriptors (slowloris). :func:`idle_protocol`
subclasses uvicorn's HTTP protocol to close such a connection after ``idle_timeout`` seconds
without a byte while it waits for a request head (after a response, uvicorn's own keep-alive
timeout closes an idle connection). While a request runs the timer is off (a long query is not
idleness); a body that stops arriving is timed out by the app
(:class:`~.app.RpcFront`), and a connection upgraded to a WebSocket belongs to the WebSocket
protocol (pings find dead peers there).

Over TLS a connection closed between requests (idle, keep-alive expired, server stopping) is
aborted rather than closed: a graceful TLS close waits for the client's ``close_notify``, which an
idle client that is not reading never sends, so each such connection stayed in uvicorn's set for
the TLS shutdown timeout (30 s) and held up a server's stop that long. A request in progress is
never cut (uvicorn closes it after its response).
"""

from __future__ import annotations

import asyncio
from typing import Any

__all__ = ["idle_protocol"]


def idle_protocol(base: type[asyncio.Protocol], idle_timeout: float | None) -> type[asyncio.Protocol]:
    """uvicorn's HTTP protocol class ``base`` (httptools' or h11's) with the head timeout
    (``None`` or 0: none) and TLS connections aborted when they are closed between requests."""

    class IdleTimeout(base):  # type: ignore[misc, valid-type]
        _idle_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self._arm()

        def shutdown(self) -> None:
            if self._between_requests() and self._tls():
                self.transport.abort()
            else:
                super().shutdown()

        def timeout_keep_alive_handler(self) -> None:
            if self._tls() and not self.transport.is_closing():
                self.transport.abort()
            else:
                super().timeout_keep_alive_handler()

        def _tls(self) -> bool:
            return self.transport.get_extra_info("sslcontext") is not None

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self._between_requests():
                self._arm()
            else:
                self._disarm()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _between_requests(self) -> bool:
            cycle = getattr(self, "cycle", None)
            return cycle is None or bool(cycle.response_complete)

        def _arm(self) -> None:
            self._disarm()
            if idle_timeout:
                self._idle_timer = self.loop.call_later(idle_timeout, self._idle)

        def _disarm(self) -> None:
            if self._idle_timer is not None:
                self._idle_timer.cancel()
                self._idle_timer = None

        def _idle(self) -> None:
            transport = self.transport
            if transport.get_protocol() is self and not transport.is_closing() and self._between_requests():
                transport.abort()

    IdleTimeout.__name__ = IdleTimeout.__qualname__ = f"Idle{base.__name__}"
    return IdleTimeout
