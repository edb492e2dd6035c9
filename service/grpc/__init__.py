"""The gRPC transport of the service: server lifecycle, servicers, converters, interceptors.

Nothing here is imported by `vaeserve.service` itself, so the core can run without grpcio.
"""
