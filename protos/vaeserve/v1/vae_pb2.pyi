from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class DType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DTYPE_UNSPECIFIED: _ClassVar[DType]
    DTYPE_FLOAT32: _ClassVar[DType]
    DTYPE_UINT8: _ClassVar[DType]

class ImageFormat(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    IMAGE_FORMAT_UNSPECIFIED: _ClassVar[ImageFormat]
    IMAGE_FORMAT_FLOAT32: _ClassVar[ImageFormat]
    IMAGE_FORMAT_UINT8: _ClassVar[ImageFormat]
    IMAGE_FORMAT_PNG: _ClassVar[ImageFormat]

class InterpolationMethod(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    INTERPOLATION_METHOD_UNSPECIFIED: _ClassVar[InterpolationMethod]
    INTERPOLATION_METHOD_LINEAR: _ClassVar[InterpolationMethod]
    INTERPOLATION_METHOD_SPHERICAL: _ClassVar[InterpolationMethod]
DTYPE_UNSPECIFIED: DType
DTYPE_FLOAT32: DType
DTYPE_UINT8: DType
IMAGE_FORMAT_UNSPECIFIED: ImageFormat
IMAGE_FORMAT_FLOAT32: ImageFormat
IMAGE_FORMAT_UINT8: ImageFormat
IMAGE_FORMAT_PNG: ImageFormat
INTERPOLATION_METHOD_UNSPECIFIED: InterpolationMethod
INTERPOLATION_METHOD_LINEAR: InterpolationMethod
INTERPOLATION_METHOD_SPHERICAL: InterpolationMethod

class Tensor(_message.Message):
    __slots__ = ("shape", "dtype", "data")
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    shape: _containers.RepeatedScalarFieldContainer[int]
    dtype: DType
    data: bytes
    def __init__(self, shape: _Optional[_Iterable[int]] = ..., dtype: _Optional[_Union[DType, str]] = ..., data: _Optional[bytes] = ...) -> None: ...

class EncodeRequest(_message.Message):
    __slots__ = ("model", "version", "images", "sample", "seed")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    model: str
    version: int
    images: Tensor
    sample: bool
    seed: int
    def __init__(self, model: _Optional[str] = ..., version: _Optional[int] = ..., images: _Optional[_Union[Tensor, _Mapping]] = ..., sample: _Optional[bool] = ..., seed: _Optional[int] = ...) -> None: ...

class EncodeResponse(_message.Message):
    __slots__ = ("z_mean", "z_log_var", "z", "seed", "model", "version")
    Z_MEAN_FIELD_NUMBER: _ClassVar[int]
    Z_LOG_VAR_FIELD_NUMBER: _ClassVar[int]
    Z_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    z_mean: Tensor
    z_log_var: Tensor
    z: Tensor
    seed: int
    model: str
    version: int
    def __init__(self, z_mean: _Optional[_Union[Tensor, _Mapping]] = ..., z_log_var: _Optional[_Union[Tensor, _Mapping]] = ..., z: _Optional[_Union[Tensor, _Mapping]] = ..., seed: _Optional[int] = ..., model: _Optional[str] = ..., version: _Optional[int] = ...) -> None: ...

class DecodeRequest(_message.Message):
    __slots__ = ("model", "version", "latents", "format")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    LATENTS_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    model: str
    version: int
    latents: Tensor
    format: ImageFormat
    def __init__(self, model: _Optional[str] = ..., version: _Optional[int] = ..., latents: _Optional[_Union[Tensor, _Mapping]] = ..., format: _Optional[_Union[ImageFormat, str]] = ...) -> None: ...

class DecodeResponse(_message.Message):
    __slots__ = ("images", "encoded", "model", "version", "encoded_format")
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    ENCODED_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    ENCODED_FORMAT_FIELD_NUMBER: _ClassVar[int]
    images: Tensor
    encoded: _containers.RepeatedScalarFieldContainer[bytes]
    model: str
    version: int
    encoded_format: ImageFormat
    def __init__(self, images: _Optional[_Union[Tensor, _Mapping]] = ..., encoded: _Optional[_Iterable[bytes]] = ..., model: _Optional[str] = ..., version: _Optional[int] = ..., encoded_format: _Optional[_Union[ImageFormat, str]] = ...) -> None: ...

class SampleRequest(_message.Message):
    __slots__ = ("model", "version", "n", "seed", "temperature", "format", "offset", "chunk_size", "concept")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    N_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    TEMPERATURE_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    CHUNK_SIZE_FIELD_NUMBER: _ClassVar[int]
    CONCEPT_FIELD_NUMBER: _ClassVar[int]
    model: str
    version: int
    n: int
    seed: int
    temperature: float
    format: ImageFormat
    offset: int
    chunk_size: int
    concept: str
    def __init__(self, model: _Optional[str] = ..., version: _Optional[int] = ..., n: _Optional[int] = ..., seed: _Optional[int] = ..., temperature: _Optional[float] = ..., format: _Optional[_Union[ImageFormat, str]] = ..., offset: _Optional[int] = ..., chunk_size: _Optional[int] = ..., concept: _Optional[str] = ...) -> None: ...

class SampleResponse(_message.Message):
    __slots__ = ("images", "encoded", "latents", "seed", "offset", "model", "version", "encoded_format")
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    ENCODED_FIELD_NUMBER: _ClassVar[int]
    LATENTS_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    ENCODED_FORMAT_FIELD_NUMBER: _ClassVar[int]
    images: Tensor
    encoded: _containers.RepeatedScalarFieldContainer[bytes]
    latents: Tensor
    seed: int
    offset: int
    model: str
    version: int
    encoded_format: ImageFormat
    def __init__(self, images: _Optional[_Union[Tensor, _Mapping]] = ..., encoded: _Optional[_Iterable[bytes]] = ..., latents: _Optional[_Union[Tensor, _Mapping]] = ..., seed: _Optional[int] = ..., offset: _Optional[int] = ..., model: _Optional[str] = ..., version: _Optional[int] = ..., encoded_format: _Optional[_Union[ImageFormat, str]] = ...) -> None: ...

class GetModelInfoRequest(_message.Message):
    __slots__ = ("model", "version")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    model: str
    version: int
    def __init__(self, model: _Optional[str] = ..., version: _Optional[int] = ...) -> None: ...

class Limits(_message.Message):
    __slots__ = ("max_batch_size", "max_delay_ms", "max_queue", "max_message_bytes", "max_images_per_request", "max_sample_n", "max_stream_n")
    MAX_BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    MAX_DELAY_MS_FIELD_NUMBER: _ClassVar[int]
    MAX_QUEUE_FIELD_NUMBER: _ClassVar[int]
    MAX_MESSAGE_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_IMAGES_PER_REQUEST_FIELD_NUMBER: _ClassVar[int]
    MAX_SAMPLE_N_FIELD_NUMBER: _ClassVar[int]
    MAX_STREAM_N_FIELD_NUMBER: _ClassVar[int]
    max_batch_size: int
    max_delay_ms: float
    max_queue: int
    max_message_bytes: int
    max_images_per_request: int
    max_sample_n: int
    max_stream_n: int
    def __init__(self, max_batch_size: _Optional[int] = ..., max_delay_ms: _Optional[float] = ..., max_queue: _Optional[int] = ..., max_message_bytes: _Optional[int] = ..., max_images_per_request: _Optional[int] = ..., max_sample_n: _Optional[int] = ..., max_stream_n: _Optional[int] = ...) -> None: ...

class ModelVersion(_message.Message):
    __slots__ = ("name", "version")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: int
    def __init__(self, name: _Optional[str] = ..., version: _Optional[int] = ...) -> None: ...

class GetModelInfoResponse(_message.Message):
    __slots__ = ("name", "version", "latent_dim", "image_shape", "encoder_sha256", "decoder_sha256", "providers", "requested_providers", "gpu_fallback", "threads", "limits", "models", "server_version", "onnxruntime_version", "metadata_json", "precision", "io_binding", "batch_buckets", "tensorrt_requested")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    LATENT_DIM_FIELD_NUMBER: _ClassVar[int]
    IMAGE_SHAPE_FIELD_NUMBER: _ClassVar[int]
    ENCODER_SHA256_FIELD_NUMBER: _ClassVar[int]
    DECODER_SHA256_FIELD_NUMBER: _ClassVar[int]
    PROVIDERS_FIELD_NUMBER: _ClassVar[int]
    REQUESTED_PROVIDERS_FIELD_NUMBER: _ClassVar[int]
    GPU_FALLBACK_FIELD_NUMBER: _ClassVar[int]
    THREADS_FIELD_NUMBER: _ClassVar[int]
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    SERVER_VERSION_FIELD_NUMBER: _ClassVar[int]
    ONNXRUNTIME_VERSION_FIELD_NUMBER: _ClassVar[int]
    METADATA_JSON_FIELD_NUMBER: _ClassVar[int]
    PRECISION_FIELD_NUMBER: _ClassVar[int]
    IO_BINDING_FIELD_NUMBER: _ClassVar[int]
    BATCH_BUCKETS_FIELD_NUMBER: _ClassVar[int]
    TENSORRT_REQUESTED_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: int
    latent_dim: int
    image_shape: _containers.RepeatedScalarFieldContainer[int]
    encoder_sha256: str
    decoder_sha256: str
    providers: _containers.RepeatedScalarFieldContainer[str]
    requested_providers: _containers.RepeatedScalarFieldContainer[str]
    gpu_fallback: bool
    threads: int
    limits: Limits
    models: _containers.RepeatedCompositeFieldContainer[ModelVersion]
    server_version: str
    onnxruntime_version: str
    metadata_json: str
    precision: str
    io_binding: bool
    batch_buckets: _containers.RepeatedScalarFieldContainer[int]
    tensorrt_requested: bool
    def __init__(self, name: _Optional[str] = ..., version: _Optional[int] = ..., latent_dim: _Optional[int] = ..., image_shape: _Optional[_Iterable[int]] = ..., encoder_sha256: _Optional[str] = ..., decoder_sha256: _Optional[str] = ..., providers: _Optional[_Iterable[str]] = ..., requested_providers: _Optional[_Iterable[str]] = ..., gpu_fallback: _Optional[bool] = ..., threads: _Optional[int] = ..., limits: _Optional[_Union[Limits, _Mapping]] = ..., models: _Optional[_Iterable[_Union[ModelVersion, _Mapping]]] = ..., server_version: _Optional[str] = ..., onnxruntime_version: _Optional[str] = ..., metadata_json: _Optional[str] = ..., precision: _Optional[str] = ..., io_binding: _Optional[bool] = ..., batch_buckets: _Optional[_Iterable[int]] = ..., tensorrt_requested: _Optional[bool] = ...) -> None: ...

class InterpolateRequest(_message.Message):
    __slots__ = ("model", "version", "start_latent", "start_image", "end_latent", "end_image", "steps", "method", "format")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    START_LATENT_FIELD_NUMBER: _ClassVar[int]
    START_IMAGE_FIELD_NUMBER: _ClassVar[int]
    END_LATENT_FIELD_NUMBER: _ClassVar[int]
    END_IMAGE_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    model: str
    version: int
    start_latent: Tensor
    start_image: Tensor
    end_latent: Tensor
    end_image: Tensor
    steps: int
    method: InterpolationMethod
    format: ImageFormat
    def __init__(self, model: _Optional[str] = ..., version: _Optional[int] = ..., start_latent: _Optional[_Union[Tensor, _Mapping]] = ..., start_image: _Optional[_Union[Tensor, _Mapping]] = ..., end_latent: _Optional[_Union[Tensor, _Mapping]] = ..., end_image: _Optional[_Union[Tensor, _Mapping]] = ..., steps: _Optional[int] = ..., method: _Optional[_Union[InterpolationMethod, str]] = ..., format: _Optional[_Union[ImageFormat, str]] = ...) -> None: ...

class InterpolateResponse(_message.Message):
    __slots__ = ("images", "encoded", "latents", "model", "version", "encoded_format")
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    ENCODED_FIELD_NUMBER: _ClassVar[int]
    LATENTS_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    ENCODED_FORMAT_FIELD_NUMBER: _ClassVar[int]
    images: Tensor
    encoded: _containers.RepeatedScalarFieldContainer[bytes]
    latents: Tensor
    model: str
    version: int
    encoded_format: ImageFormat
    def __init__(self, images: _Optional[_Union[Tensor, _Mapping]] = ..., encoded: _Optional[_Iterable[bytes]] = ..., latents: _Optional[_Union[Tensor, _Mapping]] = ..., model: _Optional[str] = ..., version: _Optional[int] = ..., encoded_format: _Optional[_Union[ImageFormat, str]] = ...) -> None: ...

class ListConceptsRequest(_message.Message):
    __slots__ = ("model", "version")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    model: str
    version: int
    def __init__(self, model: _Optional[str] = ..., version: _Optional[int] = ...) -> None: ...

class ConceptVector(_message.Message):
    __slots__ = ("name", "kind", "description", "vector", "norm")
    NAME_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    VECTOR_FIELD_NUMBER: _ClassVar[int]
    NORM_FIELD_NUMBER: _ClassVar[int]
    name: str
    kind: str
    description: str
    vector: Tensor
    norm: float
    def __init__(self, name: _Optional[str] = ..., kind: _Optional[str] = ..., description: _Optional[str] = ..., vector: _Optional[_Union[Tensor, _Mapping]] = ..., norm: _Optional[float] = ...) -> None: ...

class ConceptLabel(_message.Message):
    __slots__ = ("label", "count", "mean", "covariance")
    LABEL_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    MEAN_FIELD_NUMBER: _ClassVar[int]
    COVARIANCE_FIELD_NUMBER: _ClassVar[int]
    label: str
    count: int
    mean: Tensor
    covariance: Tensor
    def __init__(self, label: _Optional[str] = ..., count: _Optional[int] = ..., mean: _Optional[_Union[Tensor, _Mapping]] = ..., covariance: _Optional[_Union[Tensor, _Mapping]] = ...) -> None: ...

class ListConceptsResponse(_message.Message):
    __slots__ = ("vectors", "labels", "dataset", "encoder_sha256", "model", "version")
    VECTORS_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    DATASET_FIELD_NUMBER: _ClassVar[int]
    ENCODER_SHA256_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    vectors: _containers.RepeatedCompositeFieldContainer[ConceptVector]
    labels: _containers.RepeatedCompositeFieldContainer[ConceptLabel]
    dataset: str
    encoder_sha256: str
    model: str
    version: int
    def __init__(self, vectors: _Optional[_Iterable[_Union[ConceptVector, _Mapping]]] = ..., labels: _Optional[_Iterable[_Union[ConceptLabel, _Mapping]]] = ..., dataset: _Optional[str] = ..., encoder_sha256: _Optional[str] = ..., model: _Optional[str] = ..., version: _Optional[int] = ...) -> None: ...

class EditRequest(_message.Message):
    __slots__ = ("model", "version", "images", "concept", "alphas", "format")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    CONCEPT_FIELD_NUMBER: _ClassVar[int]
    ALPHAS_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    model: str
    version: int
    images: Tensor
    concept: str
    alphas: _containers.RepeatedScalarFieldContainer[float]
    format: ImageFormat
    def __init__(self, model: _Optional[str] = ..., version: _Optional[int] = ..., images: _Optional[_Union[Tensor, _Mapping]] = ..., concept: _Optional[str] = ..., alphas: _Optional[_Iterable[float]] = ..., format: _Optional[_Union[ImageFormat, str]] = ...) -> None: ...

class EditResponse(_message.Message):
    __slots__ = ("images", "encoded", "latents", "model", "version", "encoded_format")
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    ENCODED_FIELD_NUMBER: _ClassVar[int]
    LATENTS_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    ENCODED_FORMAT_FIELD_NUMBER: _ClassVar[int]
    images: Tensor
    encoded: _containers.RepeatedScalarFieldContainer[bytes]
    latents: Tensor
    model: str
    version: int
    encoded_format: ImageFormat
    def __init__(self, images: _Optional[_Union[Tensor, _Mapping]] = ..., encoded: _Optional[_Iterable[bytes]] = ..., latents: _Optional[_Union[Tensor, _Mapping]] = ..., model: _Optional[str] = ..., version: _Optional[int] = ..., encoded_format: _Optional[_Union[ImageFormat, str]] = ...) -> None: ...
