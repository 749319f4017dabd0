"""Just enough PromQL reading to find which series an expression selects, and with which labels.

Not a parser: it removes string literals, range/subquery brackets and grouping clauses, then
treats every remaining identifier that is not a function call, keyword or number as a metric name.
The tests in test_dashboard_alerts.py check it on known expressions before trusting it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

KEYWORDS = frozenset(
    {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring", "group_left", "group_right"}
)
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_BRACKETS = re.compile(r"\[[^\]]*\]")
_GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_SELECTOR = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)?\s*\{([^}]*)\}")
_IDENT = re.compile(r"(?<![\w.$])([a-zA-Z_:][a-zA-Z0-9_:]*)(\s*\()?")
_MATCHER = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"(?:[^"\\]|\\.)*"')


@dataclass(frozen=True)
class SeriesUse:
    metric: str
    labels: frozenset[str]


def series(expr: str) -> set[SeriesUse]:
    """Every metric the expression reads, with the label names its selectors match on."""
    found: set[SeriesUse] = set()
    # Selectors first, while the label strings are still intact.
    labels_by_metric: dict[str, set[str]] = {}
    for match in _SELECTOR.finditer(expr):
        name, body = match.group(1), match.group(2)
        labels = {m.group(1) for m in _MATCHER.finditer(body)}
        if name:
            labels_by_metric.setdefault(name, set()).update(labels)
    text = _SELECTOR.sub(lambda m: f" {m.group(1) or ''} ", expr)
    text = _STRING.sub(" ", text)
    text = _BRACKETS.sub(" ", text)
    text = _GROUPING.sub(" ", text)
    for match in _IDENT.finditer(text):
        name, call = match.group(1), match.group(2)
        if call or name in KEYWORDS or _is_number(name):
            continue
        found.add(SeriesUse(name, frozenset(labels_by_metric.get(name, set()))))
    return found


def _is_number(token: str) -> bool:
    return token.lower() in {"inf", "nan"}
