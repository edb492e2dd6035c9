"""The vendored KServe V2 (Open Inference Protocol) gRPC contract and its generated stubs."""
