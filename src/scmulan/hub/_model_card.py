"""The model card (``README.md``) and scvi-hub metadata (``_scvi_required_metadata.json``) of a shared model.

The layout follows scvi-tools' :mod:`scvi.hub`: the metadata JSON holds the fields of
:class:`scvi.hub.HubMetadata` (``model_cls_name="SCMULAN"``, ``model_parent_module="scmulan"``), and the card has
scvi-hub's YAML tags (``model_cls_name:``, ``scvi_version:``, ``anndata_version:``, ``modality:``, ``tissue:``,
``annotated:``) and sections (description, metrics, model properties, training, references), plus what a
scmulan user needs: the tasks the model learnt, its vocabulary and how to load it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from scmulan.model import SCMULAN

METADATA_FILE = "_scvi_required_metadata.json"
CARD_FILE = "README.md"
LIBRARY_NAME = "scmulan"
MODEL_CLS_NAME = "SCMULAN"
PARENT_MODULE = "scmulan"
NOT_PROVIDED = "Not provided by uploader"
REFERENCE = (
    "Bian, H. et al. scMulan: a multitask generative pre-trained language model for single-cell analysis. "
    "RECOMB 2024. https://doi.org/10.1007/978-1-0716-3989-4_57"
)


def _version(package: str) -> str:
    try:
        return version(package)
    except PackageNotFoundError:
        return "unknown"


def hub_metadata(model: SCMULAN, *, training_data_url: str | None = None) -> dict[str, Any]:
    """The fields of :class:`scvi.hub.HubMetadata` for ``model`` (written as ``_scvi_required_metadata.json``)."""
    registry = model.registry_ or {}
    return {
        "scvi_version": registry.get("scvi_version") or _version("scvi-tools"),
        "anndata_version": _version("anndata"),
        "model_cls_name": MODEL_CLS_NAME,
        "training_data_url": training_data_url,
        "model_parent_module": PARENT_MODULE,
    }


def _table(rows: Sequence[Sequence[Any]], header: Sequence[str]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _metric_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _training_log(model: SCMULAN) -> list[tuple[str, str]]:
    """Last logged value of every training metric (``history_``)."""
    rows = []
    for name, frame in sorted((model.history_ or {}).items()):
        values = frame.iloc[:, 0].dropna() if frame.shape[1] else []
        if len(values):
            rows.append((name, _metric_value(float(values.iloc[-1]))))
    return rows


def model_card(
    model: SCMULAN,
    *,
    repo_id: str | None = None,
    description: str | None = None,
    training_data: str | None = None,
    training_data_url: str | None = None,
    training_code_url: str | None = None,
    metrics: Mapping[str, Any] | None = None,
    license: str | None = None,
    tissues: Sequence[str] | None = None,
) -> str:
    """The model card (``README.md``) of a model shared on the Hugging Face Hub, in scvi-hub's layout.

    It names the tasks the model was trained on, its vocabulary (size, genes, metadata fields and their
    categories), the training data (your description and the registered data's size), your metrics and the last
    value of each logged training metric, the network's size, the ``setup_anndata`` arguments and how to load it.

    Parameters
    ----------
    model
        The model.
    repo_id
        The Hub repository (``"user/name"``), used in the loading example.
    description
        What the model is for (a paragraph of Markdown).
    training_data
        The training data in words: data sets, cells, organs, technologies (Markdown).
    training_data_url
        Where the training data can be downloaded (e.g. a CELLxGENE collection).
    training_code_url
        The code that trained the model.
    metrics
        Evaluation results, ``{"annotation macro-F1 (held-out)": 0.91, ...}``.
    license
        The model's license as the Hub names them (``"mit"``, ``"cc-by-4.0"``…); omitted if ``None``.
    tissues
        Tissues of the training data (``tissue:`` tags); default: the model's ``organ`` categories.

    Returns
    -------
    The card's Markdown, with the Hub's YAML header.
    """
    from huggingface_hub import ModelCardData

    vocab = model.vocab
    registry = model.registry_ or {}
    fields = vocab.metadata_fields
    if tissues is None:
        tissues = vocab.categories("organ") if "organ" in fields else []
    meta = hub_metadata(model, training_data_url=training_data_url)
    annotated = "cell_type" in fields or "coarse_cell_type" in fields
    tags = [
        "biology",
        "genomics",
        "single-cell",
        "scvi-tools",
        "scmulan",
        f"model_cls_name:{MODEL_CLS_NAME}",
        f"scvi_version:{meta['scvi_version']}",
        f"anndata_version:{meta['anndata_version']}",
        "modality:rna",
        *(f"tissue:{t}" for t in tissues),
        f"annotated:{annotated}",
    ]
    card_data = ModelCardData(license=license, library_name=LIBRARY_NAME, tags=tags)
    tasks = model.trained_tasks_ or []
    config = model.config.to_dict()
    summary = {
        k: v
        for field in (registry.get("field_registries") or {}).values()
        for k, v in (field.get("summary_stats") or {}).items()
    }
    vocab_rows = [("genes", len(vocab.genes), ", ".join(vocab.genes[:8]) + (" …" if len(vocab.genes) > 8 else ""))]
    for field in fields:
        cats = vocab.categories(field)
        vocab_rows.append((field, len(cats), ", ".join(cats[:8]) + (" …" if len(cats) > 8 else "")))
    metric_rows = [(k, _metric_value(v)) for k, v in (metrics or {}).items()]
    log_rows = _training_log(model)
    load = f'model = scmulan.SCMULAN.from_hub("{repo_id or "<user>/<repo>"}", revision="<commit or tag>")'
    data_lines = [training_data or NOT_PROVIDED, ""]
    if "n_cells" in summary:
        data_lines.append(
            f"Registered training data: {summary['n_cells']:,} cells x {summary.get('n_vars', '?'):,} genes."
        )
    sections = [
        "---",
        card_data.to_yaml(),
        "---",
        "",
        f"# scMulan model{f': {repo_id}' if repo_id else ''}",
        "",
        "A multitask generative pre-trained transformer over cell sentences (scMulan), trained with "
        f"[scmulan](https://github.com/scverse/scmulan) {_version('scmulan')}. Every cell is written as a c-sentence "
        "of (gene, expression level) pairs, its metadata and a task prompt.",
        "",
        "# Model Description",
        "",
        description or "To be added...",
        "",
        "**Tasks the model was trained on**: " + (", ".join(tasks) if tasks else "none (untrained)"),
        "",
        f"**Network**: {config['n_layer']} layers, {config['n_head']} heads, width {config['n_embd']}, "
        f"{model.module.num_parameters():,} parameters; sentences of up to {model.max_length_} tokens.",
        "",
        "# Usage",
        "",
        "```python",
        "import scmulan",
        "",
        load,
        "scmulan.pp.prepare(adata)  # log-normalise and match genes to the model",
        "scmulan.tl.annotate(adata, model)" if "annotation" in tasks else "scmulan.tl.embed(adata, model)",
        "```",
        "",
        "# Vocabulary",
        "",
        f"**Vocabulary size**: {len(vocab):,} tokens ({len(vocab.genes):,} genes, "
        f"{sum(len(vocab.categories(f)) for f in fields):,} metadata categories in {len(fields)} fields).",
        "",
        _table(vocab_rows, ["field", "entries", "first entries"]),
        "",
        "# Metrics",
        "",
        "Evaluation results provided by the uploader:",
        "",
        _table(metric_rows, ["metric", "value"]) if metric_rows else NOT_PROVIDED,
        "",
        "Training log (last logged value of each metric):",
        "",
        _table(log_rows, ["metric", "value"]) if log_rows else NOT_PROVIDED,
        "",
        "# Model Properties",
        "",
        "<details>",
        "<summary><strong>Model Parameters</strong></summary>",
        "",
        "```json",
        json.dumps({"init_params": model.init_params_, "config": config}, indent=4, default=str),
        "```",
        "",
        "</details>",
        "",
        "<details>",
        "<summary><strong>Setup Data Arguments</strong></summary>",
        "",
        "Arguments passed to `setup_anndata` of the original model:",
        "```json",
        json.dumps(registry.get("setup_args") or {}, indent=4, default=str),
        "```",
        "",
        "</details>",
        "",
        "<details>",
        "<summary><strong>Summary Statistics</strong></summary>",
        "",
        _table(sorted(summary.items()), ["statistic", "value"]) if summary else NOT_PROVIDED,
        "",
        "</details>",
        "",
        "# Training",
        "",
        "**Training data**:",
        "",
        *data_lines,
        "",
        f"**Training data url**: {training_data_url or NOT_PROVIDED}",
        "",
        f"**Training code url**: {training_code_url or NOT_PROVIDED}",
        "",
        "# References",
        "",
        REFERENCE,
        "",
    ]
    return "\n".join(sections)
