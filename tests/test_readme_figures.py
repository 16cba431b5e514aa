"""The README quotes the demo's figures from the file a real `make demo` run wrote, never typed in by hand."""

import json
from pathlib import Path

from scmulan import demo

ROOT = Path(__file__).resolve().parents[1]
START, END = "<!-- demo-scores:start -->", "<!-- demo-scores:end -->"


def test_readme_table_is_the_recorded_demo_run():
    scores = json.loads((ROOT / "docs" / "demo_scores.json").read_text())
    readme = (ROOT / "README.md").read_text()
    assert START in readme, "README.md lost the demo-scores markers"
    assert END in readme, "README.md lost the demo-scores markers"
    block = readme.split(START, 1)[1].split(END, 1)[0].strip()
    assert block == demo.table(scores).strip(), (
        "README.md's demo table differs from docs/demo_scores.json: run `make demo`, copy "
        "scmulan_demo_output/scores.json to docs/demo_scores.json and paste `demo.table(scores)` between the markers"
    )


def test_table_renders_every_recorded_figure():
    scores = json.loads((ROOT / "docs" / "demo_scores.json").read_text())
    text = demo.table(scores)
    for level in ("coarse", "fine"):
        assert f"{scores[level]['macro_f1']:.3f}" in text
    assert scores["provenance"]["commit"] in text
    assert f"{scores['provenance']['threads']} torch thread" in text
