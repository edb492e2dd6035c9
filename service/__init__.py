"""The serving side: model repository, ONNX Runtime sessions and (later) the gRPC service.

Nothing here imports torch or the training code.
"""
