"""The installed package's version: a leaf module, so that any layer can record it without importing the root."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("scmulan")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without installation
    __version__ = "0.0.0"

__all__ = ["__version__"]
