"""vaeserve: train a VAE, export it to ONNX, serve it over gRPC."""

from importlib.metadata import PackageNotFoundError, version

try:  # pyproject.toml is the one version source.
    __version__ = version("vaeserve")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"

__all__ = ["__version__"]
