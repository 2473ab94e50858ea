"""The network server: MarketStore's ``/rpc`` and gRPC wire APIs over the local engine.

``python -m mktsframe.server`` (or ``mktsframe start``) serves a data root so the unmodified
``pymarketstore`` client (HTTP or ``grpc=True``) and :class:`mktsframe.backend.http.HTTPBackend`
can use it. Modules: :mod:`~mktsframe.server.app` (starlette routes and lifespan),
:mod:`~mktsframe.server.service` (the operations and their checks, once),
:mod:`~mktsframe.server.rpc` (the JSON-RPC codec), :mod:`~mktsframe.server.grpc_api` and
:mod:`~mktsframe.server.grpc_schema` (the gRPC codec) and
:mod:`~mktsframe.server.settings` (flags, config and the uvicorn runner).
"""
