"""The Python client of vaeserve.v1.VaeService (numpy in, numpy out) and `vaeserve generate`.

Needs grpcio and protobuf, not onnxruntime: a client machine installs no runtime.
"""

from vaeserve.service.client.client import VaeClient
from vaeserve.service.client.errors import ErrorDetails, error_details
from vaeserve.service.client.results import (
    Concept,
    ConceptLabel,
    Concepts,
    EncodeResult,
    LatentImages,
    ModelInfo,
    SampleResult,
)

__all__ = [
    "Concept",
    "ConceptLabel",
    "Concepts",
    "EncodeResult",
    "ErrorDetails",
    "LatentImages",
    "ModelInfo",
    "SampleResult",
    "VaeClient",
    "error_details",
]
