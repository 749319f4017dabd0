"""Every chart value is documented, and the chart README's values table is generated from it."""

from __future__ import annotations

import subprocess
import sys

from tests.helm.chart import CHART, ROOT

sys.path.insert(0, str(ROOT / "scripts"))
import helm_docs


def test_every_value_is_documented() -> None:
    assert helm_docs.problems((CHART / "values.yaml").read_text(encoding="utf-8")) == []


def test_an_undocumented_value_is_reported() -> None:
    text = (
        "# -- Documented.\na: 1\n"
        "b:\n  # -- Inner.\n  c: 2\n  d: 3\n"
        "# -- A map documents its keys.\ne:\n  f: 4\n"
    )
    assert helm_docs.problems(text) == ["b.d: no `# --` comment on it or on a map above it"]
    assert list(helm_docs.documented_keys(text)) == ["a", "b.c", "e"]


def test_chart_readme_is_up_to_date() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "helm_docs.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    readme = (CHART / "README.md").read_text(encoding="utf-8")
    for key in ("autoscaling.keda.lanes.interactive.lagThreshold", "kafka.groupId", "topics.partitions"):
        assert f"| `{key}` |" in readme
