"""Closing HTTP connections that never send a whole request head (uvicorn does not).

uvicorn times out a keep-alive connection only *after* a response (``timeout_keep_alive``); a
connection that sends nothing, or a few bytes of a head and then nothing, stays open for ever,
so enough of them exhaust the server's file descriptors (slowloris). :func:`idle_protocol`
subclasses uvicorn's HTTP protocol to close such a connection after ``idle_timeout`` seconds
without a byte while it waits for a request head. While a request runs the timer is off (a
long query is not idleness); a body that stops arriving is timed out by the app
(:class:`~.app.RpcFront`), and a connection upgraded to a WebSocket belongs to the WebSocket
protocol (pings find dead peers there).
"""

from __future__ import annotations

import asyncio
from typing import Any

__all__ = ["idle_protocol"]


def idle_protocol(base: type[asyncio.Protocol], idle_timeout: float) -> type[asyncio.Protocol]:
    """uvicorn's HTTP protocol class ``base`` (httptools' or h11's) with the head timeout."""

    class IdleTimeout(base):  # type: ignore[misc, valid-type]
        _idle_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self._arm()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self._between_requests():
                self._arm()
            else:
                self._disarm()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._arm()  # uvicorn's keep-alive timer (shorter) usually closes it first

        def _between_requests(self) -> bool:
            cycle = getattr(self, "cycle", None)
            return cycle is None or bool(cycle.response_complete)

        def _arm(self) -> None:
            self._disarm()
            self._idle_timer = self.loop.call_later(idle_timeout, self._idle)

        def _disarm(self) -> None:
            if self._idle_timer is not None:
                self._idle_timer.cancel()
                self._idle_timer = None

        def _idle(self) -> None:
            transport = self.transport
            if transport.get_protocol() is self and not transport.is_closing() and self._between_requests():
                transport.close()

    IdleTimeout.__name__ = IdleTimeout.__qualname__ = f"Idle{base.__name__}"
    return IdleTimeout
