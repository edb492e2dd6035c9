"""The serving side: model repository, ONNX Runtime sessions, dynamic batching, the service core,
the gRPC transport (`service/grpc`) and the Python client (`service/client`). See docs/service.md.

Nothing here imports torch or the training code, and importing this package imports nothing heavy.
"""
