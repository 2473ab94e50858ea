"""The network server: MarketStore's ``/rpc`` wire API over the local engine.

``python -m mktsframe.server`` (or ``mktsframe start``) serves a data root so the unmodified
``pymarketstore`` client and :class:`mktsframe.backend.http.HTTPBackend` can use it. Modules:
:mod:`~mktsframe.server.app` (starlette routes and lifespan), :mod:`~mktsframe.server.rpc`
(method dispatch), :mod:`~mktsframe.server.nmds` (the column container) and
:mod:`~mktsframe.server.settings` (flags, config and the uvicorn runner).
"""
