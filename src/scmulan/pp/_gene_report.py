"""The gene overlap report of :func:`scmulan.pp.prepare`, printed Scanpy-style at the default verbosity."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

_RULE_LABELS = {
    "symbol": "symbol",
    "ensembl_id": "Ensembl id",
    "alias": "alias",
    "suffix_stripped": "suffix stripped",
}
_UNRESOLVED = ("not_in_model", "unrecognised", "ambiguous", "duplicate")
_N_SHOWN = 3


def gene_report_text(report: Mapping[str, Any]) -> str:
    """The overlap report as printed: what was matched, by which rule, and what was left out.

    Parameters
    ----------
    report
        ``adata.uns["scmulan_prepare"]`` as written by :func:`scmulan.pp.prepare`.

    Returns
    -------
    Two to four lines of text.
    """
    table = f", gene table {report['gene_table']}" if report.get("gene_table") else ""
    if "n_model_genes" in report:
        head = (
            f"scmulan.pp.prepare: {report['n_overlap']} of the model's {report['n_model_genes']} genes "
            f"({report['overlap_fraction']:.2%}) found in the data ({report['n_vars']} vars{table})"
        )
    else:
        head = f"scmulan.pp.prepare: {report['n_resolved']} of {report['n_vars']} vars resolved to genes{table}"
    lines = [head]
    if report.get("gene_column_note"):
        lines.append(f"    {report['gene_column_note']}")
    matched_by = report.get("matched_by", {})
    parts = []
    for rule, label in _RULE_LABELS.items():
        n = int(matched_by.get(rule, 0))
        part = f"{label} {n}"
        examples = _examples(report, rule)
        if n and examples:
            part += f" (e.g. {', '.join(examples)})"
        parts.append(part)
    lines.append("    matched by " + ", ".join(parts))
    left = []
    for status in _UNRESOLVED:
        n = int(report.get(f"n_{status}", 0))
        examples = list(report.get(status, []))[:_N_SHOWN] if status != "not_in_model" else []
        left.append(f"{n} {status.replace('_', ' ')}" + (f" (e.g. {', '.join(examples)})" if n and examples else ""))
    if not report.get("gene_table") and int(report.get("n_unrecognised", 0)):
        left[1] += " (no gene table: genes the model lacks are not told apart; gene_table=None was passed)"
    lines.append("    not matched: " + ", ".join(left))
    return "\n".join(lines)


def _examples(report: Mapping[str, Any], rule: str) -> list[str]:
    statuses = {"ensembl_id": ["ensembl_id"], "alias": ["renamed", "previous_symbol"]}.get(rule, [rule])
    if rule == "symbol":
        return []
    found = [e for s in statuses for e in report.get(s, [])]
    return found[:_N_SHOWN]


def print_gene_report(report: Mapping[str, Any]) -> None:
    """Print :func:`gene_report_text` to Scanpy's log file when ``scanpy.settings.verbosity`` ≥ 1 (its default).

    ``scanpy.settings.verbosity = 0`` silences it, as it silences Scanpy's own warnings.

    Parameters
    ----------
    report
        ``adata.uns["scmulan_prepare"]``.
    """
    import scanpy as sc

    if sc.settings.verbosity >= 1:
        print(gene_report_text(report), file=sc.settings.logfile, flush=True)
