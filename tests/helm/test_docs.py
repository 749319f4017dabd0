"""Every chart value is documented, and the chart README's values table is generated from it."""

from __future__ import annotations

import subprocess
import sys

import yaml

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


def test_deploy_guide_states_the_chart_defaults() -> None:
    """The "What the defaults do" table of docs/deploy.md is what test_keda_scaling.py asserts."""
    guide = (ROOT / "docs" / "deploy.md").read_text(encoding="utf-8")
    values = yaml.safe_load((CHART / "values.yaml").read_text(encoding="utf-8"))
    lanes = values["autoscaling"]["keda"]["lanes"]
    interactive, bulk = lanes["interactive"]["lagThreshold"], lanes["bulk"]["lagThreshold"]
    assert f"interactive `lagThreshold` {interactive}, bulk {bulk}" in guide
    assert f"ceil(50 / {interactive}) = 3" in guide
    assert f"ceil(1000 / {bulk}) = 2" in guide
