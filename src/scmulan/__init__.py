"""scmulan: a multitask generative pre-trained transformer over cell sentences, for Scanpy users.

``import scmulan`` is fast: torch, Lightning and scvi-tools are imported only inside the functions and
classes that need them (:class:`~scmulan.SCMULAN`, :func:`~scmulan.load_pretrained`, the ``tl`` functions).
"""

from importlib import import_module

from . import datasets, pl, pp, tl
from ._logging import logger
from ._version import __version__

# Heavy public names, resolved on first access (PEP 562) so that `import scmulan` never imports torch.
_LAZY = {
    "SCMULAN": "scmulan.model",
    "load_pretrained": "scmulan.model",
    "clear_pretrained_cache": "scmulan.model",
    "Vocabulary": "scmulan.vocab",
}

__all__ = ["SCMULAN", "Vocabulary", "clear_pretrained_cache", "datasets", "load_pretrained", "logger", "pl", "pp", "tl"]


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    msg = f"module 'scmulan' has no attribute {name!r}"
    raise AttributeError(msg)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
