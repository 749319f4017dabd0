#!/usr/bin/env python3
"""Generate the values table of helm/tts-stream/README.md from the `# --` comments in values.yaml.

A `# -- text` comment (continued by plain `#` lines) documents the key on the next line; a
documented map documents everything below it. The table is written between the
`<!-- values:start -->` and `<!-- values:end -->` markers of the README.

    scripts/helm_docs.py            rewrite the table
    scripts/helm_docs.py --check    exit 1 when the table is stale or a value is undocumented
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

import yaml

CHART = Path(__file__).resolve().parents[1] / "helm" / "tts-stream"
START, END = "<!-- values:start -->", "<!-- values:end -->"

_DOC_START = re.compile(r"^\s*# -- (.*)$")
_DOC_MORE = re.compile(r"^\s*#(?: (.*))?$")
_KEY = re.compile(r"^(\s*)([A-Za-z0-9_.-]+):(\s|$)")


def documented_keys(text: str) -> dict[str, str]:
    """Dotted key path -> description, in file order."""
    docs: dict[str, str] = {}
    stack: list[tuple[int, str]] = []
    pending: list[str] | None = None
    for line in text.splitlines():
        if match := _DOC_START.match(line):
            pending = [match.group(1).strip()]
            continue
        if pending is not None and not _KEY.match(line) and (more := _DOC_MORE.match(line)):
            pending.append((more.group(1) or "").strip())
            continue
        key = _KEY.match(line)
        if key is None:
            if not line.strip():
                pending = None
            continue
        indent = len(key.group(1))
        while stack and stack[-1][0] >= indent:
            stack.pop()
        stack.append((indent, key.group(2)))
        if pending is not None:
            docs[".".join(name for _, name in stack)] = " ".join(part for part in pending if part)
            pending = None
    return docs


def leaves(data: Any, prefix: str = "") -> list[str]:
    """Every value that is not a non-empty map, as a dotted path."""
    if isinstance(data, dict) and data:
        out: list[str] = []
        for key, value in data.items():
            out += leaves(value, f"{prefix}.{key}" if prefix else str(key))
        return out
    return [prefix]


def lookup(data: Any, path: str) -> Any:
    for part in path.split("."):
        data = data[part]
    return data


def type_name(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "list"
    return "object"


def problems(values_text: str) -> list[str]:
    data = yaml.safe_load(values_text)
    docs = documented_keys(values_text)
    out = []
    for leaf in leaves(data):
        parts = leaf.split(".")
        if not any(".".join(parts[:i]) in docs for i in range(1, len(parts) + 1)):
            out.append(f"{leaf}: no `# --` comment on it or on a map above it")
    for path in docs:
        try:
            lookup(data, path)
        except (KeyError, TypeError):
            out.append(f"{path}: documented but not a value")
    return out


def table(values_text: str) -> str:
    data = yaml.safe_load(values_text)
    rows = ["| Key | Type | Default | Description |", "| --- | --- | --- | --- |"]
    for path, description in documented_keys(values_text).items():
        value = lookup(data, path)
        default = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
        cells = [f"`{path}`", type_name(value), f"`{default}`", description]
        rows.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    return "\n".join(rows)


def render_readme(readme: str, values_text: str) -> str:
    if START not in readme or END not in readme:
        raise SystemExit(f"README.md lacks the {START} / {END} markers")
    head, rest = readme.split(START, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{START}\n{table(values_text)}\n{END}{tail}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 when the README is stale")
    parser.add_argument("--chart", type=Path, default=CHART)
    args = parser.parse_args(argv)
    values_text = (args.chart / "values.yaml").read_text(encoding="utf-8")
    readme_path = args.chart / "README.md"
    issues = problems(values_text)
    for issue in issues:
        print(f"values.yaml: {issue}", file=sys.stderr)
    current = readme_path.read_text(encoding="utf-8")
    wanted = render_readme(current, values_text)
    if args.check:
        if wanted != current:
            print("README.md is stale: run scripts/helm_docs.py and commit the result", file=sys.stderr)
            return 1
        return 1 if issues else 0
    readme_path.write_text(wanted, encoding="utf-8")
    return 1 if issues else 0


if __name__ == "__main__":
    sys.exit(main())
