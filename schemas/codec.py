"""The one Avro codec both sides use (and the only module that imports fastavro).

Two framings, told apart by the first byte on read:

* Avro single-object encoding: ``C3 01`` + 8-byte little-endian CRC-64-AVRO fingerprint of the
  writer schema's parsing canonical form + the Avro body. Resolved against the schema versions
  bundled in ``schemas/avro/``: the registry-less default.
* Confluent Schema Registry framing: ``00`` + 4-byte big-endian schema id + the Avro body, with
  writer schemas fetched (and cached) through confluent-kafka's schema-registry client.

Every decode failure is a `DecodeError` that names what was wrong and keeps the raw bytes.
"""

from __future__ import annotations

import enum
import io
import json
import re
import struct
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib import resources
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import fastavro
import fastavro.validation
from fastavro.schema import fingerprint, to_parsing_canonical_form

from schemas import model
from schemas.errors import DecodeError, DecodeReason, EncodeError
from schemas.fastwrite import Unsupported, compile_writer

if TYPE_CHECKING:
    from confluent_kafka.schema_registry import SchemaRegistryClient

SINGLE_OBJECT_MAGIC = b"\xc3\x01"
CONFLUENT_MAGIC = 0
_CONFLUENT_HEADER = struct.Struct(">bI")


class Framing(enum.StrEnum):
    SINGLE_OBJECT = "single-object"
    CONFLUENT = "confluent"


@dataclass(frozen=True, slots=True)
class SchemaVersion:
    """One released version of a record schema."""

    version: int
    parsed: Any
    canonical_form: str
    fingerprint: bytes  # 8 bytes, little-endian, as written in single-object headers
    # The same schema without logical types: what the codec reads with, so timestamps come
    # back as the exact integers the model keeps (no datetime round trip, no year-9999 limit).
    plain: Any = None

    @property
    def json(self) -> str:
        return self.canonical_form


@dataclass(frozen=True)
class SchemaFamily:
    """Every released version of one record type, oldest first."""

    full_name: str
    versions: tuple[SchemaVersion, ...]

    @property
    def latest(self) -> SchemaVersion:
        return self.versions[-1]

    def by_fingerprint(self, fp: bytes) -> SchemaVersion | None:
        for version in self.versions:
            if version.fingerprint == fp:
                return version
        return None


def parse_schema_text(text: str) -> Any:
    return fastavro.parse_schema(json.loads(text))


def schema_version_from_text(version: int, text: str) -> SchemaVersion:
    raw = json.loads(text)
    parsed = fastavro.parse_schema(raw)
    canonical = to_parsing_canonical_form(parsed)
    # fastavro returns the fingerprint's little-endian bytes as hex, which is exactly what the
    # single-object header carries (the Avro spec writes the 64-bit CRC least significant first).
    fp = bytes.fromhex(fingerprint(canonical, "CRC-64-AVRO"))
    plain = fastavro.parse_schema(_without_logical_types(raw), _force=True)
    return SchemaVersion(version, parsed, canonical, fp, plain)


def _without_logical_types(schema: Any) -> Any:
    """Logical types only change how values are presented, never the bytes; the parsing
    canonical form (and so the fingerprint) ignores them too."""
    if isinstance(schema, list):
        return [_without_logical_types(s) for s in schema]
    if isinstance(schema, dict):
        return {k: _without_logical_types(v) for k, v in schema.items() if k != "logicalType"}
    return schema


def load_family(folder: str) -> SchemaFamily:
    """Load ``schemas/avro/<folder>/v<N>.avsc`` for every N, in version order."""
    base = resources.files("schemas") / "avro" / folder
    found: list[SchemaVersion] = []
    for entry in base.iterdir():
        name = entry.name
        if name.startswith("v") and name.endswith(".avsc"):
            found.append(schema_version_from_text(int(name[1:-5]), entry.read_text("utf-8")))
    if not found:
        raise RuntimeError(f"no schema versions bundled under schemas/avro/{folder}")
    found.sort(key=lambda v: v.version)
    names = {v.parsed["name"] for v in found}
    if len(names) != 1:
        raise RuntimeError(f"schema versions under {folder} disagree on the record name: {names}")
    return SchemaFamily(names.pop(), tuple(found))


REQUEST_SCHEMAS = load_family("synthesis_request")
RESULT_SCHEMAS = load_family("synthesis_result")


def resolves(writer: SchemaVersion, reader: SchemaVersion, sample: Mapping[str, Any]) -> Any:
    """Encode `sample` with `writer` and read it back with `reader` (schema resolution)."""
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, writer.parsed, dict(sample), strict_allow_default=True)
    buf.seek(0)
    return fastavro.schemaless_reader(
        buf, writer.parsed, reader.parsed, return_record_name=True, return_record_name_override=True
    )


# ------------------------------------------------------------------------------------ codec --

T = TypeVar("T")


class AvroCodec(Generic[T]):
    """Encodes and decodes one record type in either framing.

    Thread-safe: the schema caches are guarded, fastavro itself keeps no state per call.
    """

    def __init__(
        self,
        family: SchemaFamily,
        to_avro: Callable[[T], dict[str, Any]],
        from_avro: Callable[[Mapping[str, Any]], T],
        *,
        registry: SchemaRegistryClient | None = None,
        auto_register: bool = True,
    ) -> None:
        self.family = family
        self._to_avro = to_avro
        self._from_avro = from_avro
        self._registry = registry
        self._auto_register = auto_register
        self._writer = family.latest
        self._fast_write = compile_writer(self._writer.parsed)
        self._header = SINGLE_OBJECT_MAGIC + self._writer.fingerprint
        self._ids_by_subject: dict[str, int] = {}
        self._schemas_by_id: dict[int, SchemaVersion] = {}
        self._lock = threading.Lock()

    # ---------------------------------------------------------------- encode

    def encode(
        self, event: T, *, framing: Framing = Framing.SINGLE_OBJECT, topic: str | None = None
    ) -> bytes:
        return self.encode_datum(self._to_avro(event), framing=framing, topic=topic)

    def encode_datum(
        self,
        datum: Mapping[str, Any],
        *,
        framing: Framing = Framing.SINGLE_OBJECT,
        topic: str | None = None,
    ) -> bytes:
        if framing is Framing.CONFLUENT:
            if topic is None:
                raise EncodeError("Confluent framing needs the topic to name the subject")
            header = _CONFLUENT_HEADER.pack(CONFLUENT_MAGIC, self._schema_id_for(topic))
        else:
            header = self._header
        try:
            return header + self._fast_write(datum)
        except Unsupported:
            pass  # something unusual: let fastavro's strict writer encode it or say what is wrong
        buf = io.BytesIO()
        buf.write(header)
        try:
            fastavro.schemaless_writer(buf, self._writer.parsed, datum, strict=True)
        except (TypeError, ValueError, AttributeError, KeyError, OverflowError) as exc:
            raise self._explain_encode_failure(datum, exc) from exc
        return buf.getvalue()

    def _explain_encode_failure(self, datum: Mapping[str, Any], exc: Exception) -> EncodeError:
        """fastavro's strict writer reports the first problem without saying where; find the
        field ourselves so the caller gets "voice.name: expected string, got int"."""
        problem = _find_problem(datum, self._writer.parsed, "")
        if problem is None:
            return EncodeError(f"{self.family.full_name}: {exc}")
        path, message = problem
        return EncodeError(f"{self.family.full_name}.{path}: {message}", path)

    def _schema_id_for(self, topic: str) -> int:
        subject = f"{topic}-value"
        with self._lock:
            cached = self._ids_by_subject.get(subject)
        if cached is not None:
            return cached
        registry = self._require_registry()
        from confluent_kafka.schema_registry import Schema

        schema = Schema(self._writer.canonical_form, "AVRO")
        if self._auto_register:
            schema_id = int(registry.register_schema(subject, schema))
        else:
            schema_id = int(registry.lookup_schema(subject, schema).schema_id or 0)
        with self._lock:
            self._ids_by_subject[subject] = schema_id
            self._schemas_by_id[schema_id] = self._writer
        return int(schema_id)

    def _require_registry(self) -> SchemaRegistryClient:
        if self._registry is None:
            raise EncodeError("Confluent framing needs a schema registry client")
        return self._registry

    # ---------------------------------------------------------------- decode

    def decode(self, data: bytes) -> T:
        datum = self.decode_datum(data)
        try:
            return self._from_avro(datum)
        except (KeyError, ValueError, TypeError) as exc:
            raise DecodeError(DecodeReason.INVALID_DATA, str(exc), data) from exc

    def decode_datum(self, data: bytes) -> dict[str, Any]:
        if not data:
            raise DecodeError(DecodeReason.EMPTY, "message has no bytes", data or b"")
        first = data[0]
        if first == SINGLE_OBJECT_MAGIC[0]:
            writer, body_start = self._single_object_writer(data)
        elif first == CONFLUENT_MAGIC:
            writer, body_start = self._confluent_writer(data)
        else:
            raise DecodeError(
                DecodeReason.BAD_MAGIC,
                f"first byte 0x{first:02x} is neither single-object (0xc3) nor Confluent (0x00)",
                data,
            )
        return self._read_body(data, body_start, writer)

    def _single_object_writer(self, data: bytes) -> tuple[SchemaVersion, int]:
        if len(data) < 10:
            raise DecodeError(DecodeReason.TRUNCATED, "single-object header needs 10 bytes", data)
        if data[1] != SINGLE_OBJECT_MAGIC[1]:
            raise DecodeError(DecodeReason.BAD_MAGIC, f"second byte 0x{data[1]:02x} is not 0x01", data)
        fp = data[2:10]
        writer = self.family.by_fingerprint(fp)
        if writer is None:
            raise DecodeError(
                DecodeReason.UNKNOWN_FINGERPRINT,
                f"fingerprint {int.from_bytes(fp, 'little'):016x} matches no bundled "
                f"{self.family.full_name} version",
                data,
            )
        return writer, 10

    def _confluent_writer(self, data: bytes) -> tuple[SchemaVersion, int]:
        if len(data) < 5:
            raise DecodeError(DecodeReason.TRUNCATED, "Confluent header needs 5 bytes", data)
        schema_id: int = _CONFLUENT_HEADER.unpack_from(data)[1]
        with self._lock:
            cached = self._schemas_by_id.get(schema_id)
        if cached is not None:
            return cached, 5
        if self._registry is None:
            raise DecodeError(
                DecodeReason.NO_REGISTRY,
                f"Confluent-framed message (schema id {schema_id}) but no registry is configured",
                data,
            )
        writer = self._fetch_writer(schema_id, data)
        with self._lock:
            self._schemas_by_id[schema_id] = writer
        return writer, 5

    def _fetch_writer(self, schema_id: int, data: bytes) -> SchemaVersion:
        from confluent_kafka.schema_registry.error import SchemaRegistryError

        assert self._registry is not None
        try:
            schema = self._registry.get_schema(schema_id)
        except SchemaRegistryError as exc:
            if exc.http_status_code == 404:
                raise DecodeError(
                    DecodeReason.UNKNOWN_SCHEMA_ID, f"registry has no schema id {schema_id}", data
                ) from exc
            raise DecodeError(DecodeReason.REGISTRY_UNAVAILABLE, str(exc), data) from exc
        except Exception as exc:  # connection errors come from the HTTP library underneath
            raise DecodeError(DecodeReason.REGISTRY_UNAVAILABLE, str(exc), data) from exc
        try:
            writer = schema_version_from_text(0, schema.schema_str or "")
        except Exception as exc:
            raise DecodeError(
                DecodeReason.UNKNOWN_SCHEMA_ID,
                f"schema id {schema_id} is not usable Avro: {exc}",
                data,
            ) from exc
        if writer.parsed.get("name") != self.family.full_name:
            raise DecodeError(
                DecodeReason.WRONG_RECORD_TYPE,
                f"schema id {schema_id} is {writer.parsed.get('name')}, not {self.family.full_name}",
                data,
            )
        return writer

    def _read_body(self, data: bytes, start: int, writer: SchemaVersion) -> dict[str, Any]:
        buf = io.BytesIO(data)
        buf.seek(start)
        try:
            datum = fastavro.schemaless_reader(
                buf,
                writer.plain,
                self._writer.plain,
                return_record_name=True,
                return_record_name_override=True,
            )
        except EOFError as exc:
            raise _length_error(exc, data) from exc
        except UnicodeDecodeError as exc:
            raise DecodeError(DecodeReason.INVALID_UTF8, str(exc), data) from exc
        except (MemoryError, OverflowError) as exc:
            raise DecodeError(DecodeReason.BAD_LENGTH, f"absurd length: {exc}", data) from exc
        except Exception as exc:  # fastavro raises plain ValueError/IndexError/KeyError on junk
            raise DecodeError(DecodeReason.INVALID_DATA, f"{type(exc).__name__}: {exc}", data) from exc
        if buf.tell() != len(data):
            raise DecodeError(
                DecodeReason.TRAILING_BYTES,
                f"{len(data) - buf.tell()} bytes left after the record",
                data,
            )
        if not isinstance(datum, dict):
            raise DecodeError(DecodeReason.INVALID_DATA, "body is not a record", data)
        return datum


_EXPECTED_BYTES = re.compile(r"Expected (-?\d+) bytes")


def _length_error(exc: EOFError, data: bytes) -> DecodeError:
    """A negative length, or one longer than the whole message, is a corrupt length prefix;
    a plausible one that runs past the end is a truncated message."""
    match = _EXPECTED_BYTES.search(str(exc))
    if match is not None:
        declared = int(match.group(1))
        if declared < 0 or declared > len(data):
            return DecodeError(
                DecodeReason.BAD_LENGTH,
                f"a length prefix says {declared} bytes; the whole message has {len(data)}",
                data,
            )
    return DecodeError(DecodeReason.TRUNCATED, f"body ends early ({exc})", data)


def _find_problem(value: Any, schema: Any, path: str) -> tuple[str, str] | None:
    """Return (field path, what is wrong) for the first field of `value` that `schema` rejects."""
    if isinstance(schema, list):  # a union: descend into the record branch the value names
        branches = [
            b
            for b in schema
            if isinstance(b, dict) and isinstance(value, tuple) and b.get("name") == value[0]
        ]
        return _find_problem(value[1], branches[0], path) if branches else None
    if not (isinstance(schema, dict) and schema.get("type") == "record"):
        return None
    if isinstance(value, tuple):  # tuple notation: (record name, fields)
        value = value[1]
    if not isinstance(value, Mapping):
        return path or "<record>", f"expected a record, got {type(value).__name__}"
    extra = sorted(set(value) - {f["name"] for f in schema["fields"]})
    if extra:
        return f"{path}.{extra[0]}".lstrip("."), "unknown field"
    for f in schema["fields"]:
        problem = _field_problem(value, f, f"{path}.{f['name']}".lstrip("."))
        if problem is not None:
            return problem
    return None


def _field_problem(record: Mapping[str, Any], field: Any, where: str) -> tuple[str, str] | None:
    if field["name"] not in record:
        return None if "default" in field else (where, "missing required field")
    value = record[field["name"]]
    if fastavro.validation.validate(value, field["type"], raise_errors=False):
        return None
    inner = _find_problem(value, field["type"], where)
    if inner is not None and inner[0] != where:
        return inner
    shown = repr(value)
    shown = shown if len(shown) <= 60 else shown[:57] + "..."
    return where, f"{shown} does not match {_type_name(field['type'])}"


def _type_name(schema: Any) -> str:
    if isinstance(schema, list):
        return " | ".join(_type_name(s) for s in schema)
    if isinstance(schema, dict):
        return str(schema.get("logicalType") or schema.get("name") or schema.get("type"))
    return str(schema)


def request_codec(
    registry: SchemaRegistryClient | None = None, *, auto_register: bool = True
) -> AvroCodec[model.SynthesisRequest]:
    return AvroCodec(
        REQUEST_SCHEMAS,
        model.request_to_avro,
        model.request_from_avro,
        registry=registry,
        auto_register=auto_register,
    )


def result_codec(
    registry: SchemaRegistryClient | None = None, *, auto_register: bool = True
) -> AvroCodec[model.SynthesisResult]:
    return AvroCodec(
        RESULT_SCHEMAS,
        model.result_to_avro,
        model.result_from_avro,
        registry=registry,
        auto_register=auto_register,
    )


def registry_client(url: str, **config: Any) -> SchemaRegistryClient:
    """A confluent-kafka schema-registry client for any Confluent-compatible registry."""
    from confluent_kafka.schema_registry import SchemaRegistryClient

    return SchemaRegistryClient({"url": url, **config})
