"""Push subscriptions: every committed write, as it happens, to in-process and ``/ws`` subscribers.

``backend.subscribe(pattern, since=None, callback=None)`` returns a
:class:`~mktsframe.streaming.subscription.Subscription` on either backend. Modules:
:mod:`.patterns` (stream globs), :mod:`.messages` (what is pushed), :mod:`.feed` (bounded
per-subscriber queues and the overflow policy), :mod:`.hub` (fan-out of engine commits),
:mod:`.resume` (``since``: storage then live, no gap, no duplicate), :mod:`.local` and
:mod:`.ws_client` (the two ways to subscribe). The server side is :mod:`mktsframe.server.ws`.
"""

from mktsframe.streaming.feed import SlowConsumerError
from mktsframe.streaming.subscription import Subscription

__all__ = ["SlowConsumerError", "Subscription"]
