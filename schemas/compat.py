"""Avro schema compatibility, as the schema-resolution rules of the Avro specification define it.

`read_problems(writer, reader)` lists why data written with `writer` could not be read with
`reader` (empty: it can). FULL_TRANSITIVE, the policy our schemas evolve under, means every
version can read every other one, in both directions: `full_transitive_problems` checks exactly
that for a sequence of versions, so a test (and `tts-stream` tooling) can refuse a candidate
version before it is ever released or registered.

Works on schemas as `fastavro.parse_schema` returns them (named types fully qualified, defined
once and referenced by name afterwards); it imports nothing from fastavro itself.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

PRIMITIVES = frozenset({"null", "boolean", "int", "long", "float", "double", "bytes", "string"})
# writer type -> reader types it may be promoted to (Avro spec, "Schema Resolution")
PROMOTIONS = {
    "int": frozenset({"long", "float", "double"}),
    "long": frozenset({"float", "double"}),
    "float": frozenset({"double"}),
    "string": frozenset({"bytes"}),
    "bytes": frozenset({"string"}),
}
NAMED_KINDS = frozenset({"record", "enum", "fixed", "error"})


@dataclass(frozen=True, slots=True)
class Problem:
    """One reason a reader cannot read a writer's data."""

    path: str
    message: str
    writer: str = ""
    reader: str = ""

    def __str__(self) -> str:
        where = f"{self.writer} -> {self.reader}: " if self.writer or self.reader else ""
        return f"{where}{self.path or '<root>'}: {self.message}"


def _named_types(schema: Any) -> dict[str, Any]:
    found: dict[str, Any] = {}

    def walk(node: Any) -> None:
        if isinstance(node, list):
            for branch in node:
                walk(branch)
        elif isinstance(node, dict):
            kind = node.get("type")
            if kind in NAMED_KINDS and "name" in node:
                found[node["name"]] = node
                for f in node.get("fields", ()):
                    walk(f["type"])
            elif kind == "array":
                walk(node["items"])
            elif kind == "map":
                walk(node["values"])
            elif isinstance(kind, dict | list):
                walk(kind)

    walk(schema)
    return found


def _short(name: str) -> str:
    return name.rsplit(".", 1)[-1]


class _Checker:
    def __init__(self, writer: Any, reader: Any) -> None:
        self._writer_names = _named_types(writer)
        self._reader_names = _named_types(reader)
        self._in_progress: set[tuple[str, str]] = set()

    def resolve(self, schema: Any, names: dict[str, Any]) -> Any:
        """Replace a reference to a named type by its definition; unwrap {"type": "long"}."""
        if isinstance(schema, str):
            return names.get(schema, schema)
        if isinstance(schema, dict):
            kind = schema.get("type")
            if isinstance(kind, str) and kind in PRIMITIVES:
                return kind  # logical types do not take part in resolution
            if isinstance(kind, dict | list) or (isinstance(kind, str) and kind not in _ALL_KINDS):
                return self.resolve(kind, names)
        return schema

    def check(self, writer: Any, reader: Any, path: str) -> Iterator[Problem]:
        w = self.resolve(writer, self._writer_names)
        r = self.resolve(reader, self._reader_names)
        if isinstance(w, list):
            for index, branch in enumerate(w):
                problems = list(self.check(branch, r, path))
                if problems:
                    yield Problem(
                        path,
                        f"writer union branch {index} ({_label(branch)}) cannot be read: "
                        + "; ".join(p.message for p in problems[:1]),
                    )
            return
        if isinstance(r, list):
            if not any(not list(self.check(w, branch, path)) for branch in r):
                yield Problem(path, f"{_label(w)} matches no branch of the reader's union {_label(r)}")
            return
        yield from self._check_single(w, r, path)

    def _check_single(self, w: Any, r: Any, path: str) -> Iterator[Problem]:
        w_kind = w if isinstance(w, str) else w["type"]
        r_kind = r if isinstance(r, str) else r["type"]
        if w_kind in PRIMITIVES or r_kind in PRIMITIVES:
            if w_kind != r_kind and r_kind not in PROMOTIONS.get(w_kind, frozenset()):
                yield Problem(path, f"{_label(w)} cannot be read as {_label(r)}")
            return
        if w_kind != r_kind:
            yield Problem(path, f"{w_kind} cannot be read as {r_kind}")
            return
        if w_kind in ("record", "error"):
            yield from self._check_record(w, r, path)
        elif w_kind == "enum":
            yield from self._check_enum(w, r, path)
        elif w_kind == "fixed":
            if _short(w["name"]) != _short(r["name"]) or w["size"] != r["size"]:
                yield Problem(path, f"fixed {w['name']}[{w['size']}] is not {r['name']}[{r['size']}]")
        elif w_kind == "array":
            yield from self.check(w["items"], r["items"], f"{path}[]")
        elif w_kind == "map":
            yield from self.check(w["values"], r["values"], f"{path}{{}}")

    def _check_record(self, w: Any, r: Any, path: str) -> Iterator[Problem]:
        if _short(w["name"]) != _short(r["name"]) and _short(w["name"]) not in _aliases(r):
            yield Problem(path, f"record {w['name']} is not {r['name']}")
            return
        pair = (w["name"], r["name"])
        if pair in self._in_progress:  # recursive type: already being checked higher up
            return
        self._in_progress.add(pair)
        try:
            writer_fields = {f["name"]: f for f in w["fields"]}
            for field in r["fields"]:
                where = f"{path}.{field['name']}".lstrip(".")
                source = writer_fields.get(field["name"]) or next(
                    (writer_fields[a] for a in field.get("aliases", ()) if a in writer_fields), None
                )
                if source is None:
                    if "default" not in field:
                        yield Problem(where, "is missing from the writer's schema and has no default")
                    continue
                yield from self.check(source["type"], field["type"], where)
        finally:
            self._in_progress.discard(pair)

    def _check_enum(self, w: Any, r: Any, path: str) -> Iterator[Problem]:
        if _short(w["name"]) != _short(r["name"]) and _short(w["name"]) not in _aliases(r):
            yield Problem(path, f"enum {w['name']} is not {r['name']}")
            return
        missing = [s for s in w["symbols"] if s not in r["symbols"]]
        if missing and "default" not in r:
            yield Problem(
                path,
                f"reader's enum {_short(r['name'])} lacks {', '.join(missing)} and has no default symbol",
            )


_ALL_KINDS = PRIMITIVES | NAMED_KINDS | {"array", "map"}


def _aliases(schema: Any) -> set[str]:
    return {_short(a) for a in schema.get("aliases", ())}


def _label(schema: Any) -> str:
    if isinstance(schema, list):
        return "[" + ", ".join(_label(b) for b in schema) + "]"
    if isinstance(schema, dict):
        kind = schema.get("type")
        if "name" in schema:
            return f"{kind} {_short(schema['name'])}"
        return str(kind)
    return _short(str(schema))


def read_problems(writer: Any, reader: Any) -> list[Problem]:
    """Why data written with `writer` cannot be read with `reader` (empty when it can)."""
    return list(_Checker(writer, reader).check(writer, reader, ""))


def full_transitive_problems(versions: Sequence[tuple[str, Any]]) -> list[Problem]:
    """Every (writer, reader) pair of distinct versions that fails, in both directions.

    `versions` are (label, parsed schema) pairs, for example ("v1", ...), ("v2", ...).
    """
    problems: list[Problem] = []
    for writer_label, writer in versions:
        for reader_label, reader in versions:
            if writer_label == reader_label:
                continue
            for problem in read_problems(writer, reader):
                problems.append(Problem(problem.path, problem.message, writer_label, reader_label))
    return problems
