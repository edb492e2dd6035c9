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
DTYPE_UNSPECIFIED: DType
DTYPE_FLOAT32: DType
DTYPE_UINT8: DType
IMAGE_FORMAT_UNSPECIFIED: ImageFormat
IMAGE_FORMAT_FLOAT32: ImageFormat
IMAGE_FORMAT_UINT8: ImageFormat
IMAGE_FORMAT_PNG: ImageFormat

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
    __slots__ = ("images", "png", "model", "version")
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    PNG_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    images: Tensor
    png: _containers.RepeatedScalarFieldContainer[bytes]
    model: str
    version: int
    def __init__(self, images: _Optional[_Union[Tensor, _Mapping]] = ..., png: _Optional[_Iterable[bytes]] = ..., model: _Optional[str] = ..., version: _Optional[int] = ...) -> None: ...

class SampleRequest(_message.Message):
    __slots__ = ("model", "version", "n", "seed", "temperature", "format", "offset", "chunk_size")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    N_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    TEMPERATURE_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    CHUNK_SIZE_FIELD_NUMBER: _ClassVar[int]
    model: str
    version: int
    n: int
    seed: int
    temperature: float
    format: ImageFormat
    offset: int
    chunk_size: int
    def __init__(self, model: _Optional[str] = ..., version: _Optional[int] = ..., n: _Optional[int] = ..., seed: _Optional[int] = ..., temperature: _Optional[float] = ..., format: _Optional[_Union[ImageFormat, str]] = ..., offset: _Optional[int] = ..., chunk_size: _Optional[int] = ...) -> None: ...

class SampleResponse(_message.Message):
    __slots__ = ("images", "png", "latents", "seed", "offset", "model", "version")
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    PNG_FIELD_NUMBER: _ClassVar[int]
    LATENTS_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    images: Tensor
    png: _containers.RepeatedScalarFieldContainer[bytes]
    latents: Tensor
    seed: int
    offset: int
    model: str
    version: int
    def __init__(self, images: _Optional[_Union[Tensor, _Mapping]] = ..., png: _Optional[_Iterable[bytes]] = ..., latents: _Optional[_Union[Tensor, _Mapping]] = ..., seed: _Optional[int] = ..., offset: _Optional[int] = ..., model: _Optional[str] = ..., version: _Optional[int] = ...) -> None: ...

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
    __slots__ = ("name", "version", "latent_dim", "image_shape", "encoder_sha256", "decoder_sha256", "providers", "requested_providers", "gpu_fallback", "threads", "limits", "models", "server_version", "onnxruntime_version", "metadata_json")
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
    def __init__(self, name: _Optional[str] = ..., version: _Optional[int] = ..., latent_dim: _Optional[int] = ..., image_shape: _Optional[_Iterable[int]] = ..., encoder_sha256: _Optional[str] = ..., decoder_sha256: _Optional[str] = ..., providers: _Optional[_Iterable[str]] = ..., requested_providers: _Optional[_Iterable[str]] = ..., gpu_fallback: _Optional[bool] = ..., threads: _Optional[int] = ..., limits: _Optional[_Union[Limits, _Mapping]] = ..., models: _Optional[_Iterable[_Union[ModelVersion, _Mapping]]] = ..., server_version: _Optional[str] = ..., onnxruntime_version: _Optional[str] = ..., metadata_json: _Optional[str] = ...) -> None: ...
