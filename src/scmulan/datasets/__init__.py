from ._pbmc68k import pbmc68k
from ._synthetic import synthetic_atlas

__all__ = ["pbmc68k", "synthetic_atlas"]
