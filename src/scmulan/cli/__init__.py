"""The ``scmulan`` command line: ``annotate``, ``embed``, ``predict-metadata``, ``generate`` and ``train``.

Each command wraps one public function (:func:`scmulan.tl.annotate`, …, :meth:`scmulan.SCMULAN.train`) for
pipelines (Snakemake, Nextflow, shell). ``scmulan --help`` imports neither torch nor scvi-tools: the commands
import them when they run.
"""

from ._main import build_parser, main

__all__ = ["build_parser", "main"]
