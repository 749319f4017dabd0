"""Which series a PromQL expression selects, and with which labels: the expression parsed by a
real PromQL parser (promql-parser: Python bindings of the Rust `promql-parser` crate), its tree
walked for vector selectors.

Grafana's range variables (`$__rate_interval`, ...) are not PromQL; they are replaced by a
duration first, as Grafana does before it sends a query. Variables inside label values are
just strings to the parser.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import promql_parser

_GRAFANA_RANGES = re.compile(r"\$__(rate_interval|interval|range)\b")


@dataclass(frozen=True)
class SeriesUse:
    metric: str
    labels: frozenset[str]


def series(expr: str) -> set[SeriesUse]:
    """Every metric the expression reads, with the label names its selectors match on."""
    found: set[SeriesUse] = set()
    _walk(promql_parser.parse(_GRAFANA_RANGES.sub("5m", expr)), found)
    return found


def _walk(node: Any, found: set[SeriesUse]) -> None:
    if isinstance(node, promql_parser.VectorSelector):
        matchers = list(node.matchers.matchers) + [m for group in node.matchers.or_matchers for m in group]
        name = node.name or next((m.value for m in matchers if m.name == "__name__"), None)
        assert name, f"a selector without a metric name: {node}"
        found.add(SeriesUse(name, frozenset(m.name for m in matchers if m.name != "__name__")))
    elif isinstance(node, promql_parser.MatrixSelector):
        _walk(node.vector_selector, found)
    elif isinstance(node, promql_parser.BinaryExpr):
        _walk(node.lhs, found)
        _walk(node.rhs, found)
    elif isinstance(node, promql_parser.Call):
        for argument in node.args:
            _walk(argument, found)
    elif isinstance(node, promql_parser.AggregateExpr):
        _walk(node.expr, found)
        if node.param is not None:
            _walk(node.param, found)
    elif isinstance(node, (promql_parser.ParenExpr, promql_parser.UnaryExpr, promql_parser.SubqueryExpr)):
        _walk(node.expr, found)
