"""Peers: the same decoder.onnx served by vaeserve, a plain grpc.aio server, PyTriton and
MLServer, driven by one load generator (`make bench-peers`, python -m benchmarks.peers.run).

Modules that the PyTriton and MLServer processes import (`ortsession`, `triton`,
`mlserver_runtime`) run in the peers' own venv and must not import vaeserve.
"""
