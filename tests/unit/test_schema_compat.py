"""FULL_TRANSITIVE: every bundled version reads every other one, both ways; and the checker
that proves it refuses incompatible candidates."""

from __future__ import annotations

import copy
import json
from importlib import resources
from typing import Any

import fastavro
import pytest
from hypothesis import given, settings

from schemas import codec, model
from schemas.codec import SchemaFamily, SchemaVersion
from schemas.compat import full_transitive_problems, read_problems
from schemas.model import SynthesisRequest
from tests.unit.contract_strategies import REQUESTS, RESULTS

FAMILIES = {"synthesis_request": codec.REQUEST_SCHEMAS, "synthesis_result": codec.RESULT_SCHEMAS}

# Released versions are immutable: their parsing canonical form (and so the fingerprint every
# single-object message carries) must never change. Editing docs is fine; editing types is not.
RELEASED_FINGERPRINTS = {
    ("synthesis_request", 1): 0x8A7BEA77C917182C,
    ("synthesis_request", 2): 0x7DB9526883DCCD06,
    ("synthesis_result", 1): 0x88B801B905AFE116,
}


def _raw(folder: str, version: int) -> dict[str, Any]:
    text = (resources.files("schemas") / "avro" / folder / f"v{version}.avsc").read_text("utf-8")
    return dict(json.loads(text))


def _labelled(family: SchemaFamily) -> list[tuple[str, Any]]:
    return [(f"v{v.version}", v.parsed) for v in family.versions]


@pytest.mark.parametrize("folder", FAMILIES)
def test_bundled_versions_are_full_transitive(folder: str) -> None:
    assert full_transitive_problems(_labelled(FAMILIES[folder])) == []


@pytest.mark.parametrize("folder", FAMILIES)
def test_versions_are_numbered_without_gaps(folder: str) -> None:
    numbers = [v.version for v in FAMILIES[folder].versions]
    assert numbers == list(range(1, len(numbers) + 1))


@pytest.mark.parametrize(("folder", "version"), list(RELEASED_FINGERPRINTS))
def test_released_versions_never_change(folder: str, version: int) -> None:
    found = FAMILIES[folder].versions[version - 1]
    assert int.from_bytes(found.fingerprint, "little") == RELEASED_FINGERPRINTS[(folder, version)], (
        f"{folder}/v{version}.avsc changed: add a new version instead"
    )


def test_every_bundled_version_is_pinned_here() -> None:
    bundled = {(folder, v.version) for folder, family in FAMILIES.items() for v in family.versions}
    assert bundled == set(RELEASED_FINGERPRINTS), "pin the fingerprint of each new release above"


# ------------------------------------------------------------------- the data, not just the schemas


def _datum_for(version: SchemaVersion, full: dict[str, Any]) -> dict[str, Any]:
    names = {f["name"] for f in version.parsed["fields"]}
    return {k: v for k, v in full.items() if k in names}


def _check_every_pair(family: SchemaFamily, full: dict[str, Any]) -> None:
    for writer in family.versions:
        written = _datum_for(writer, full)
        for reader in family.versions:
            read = codec.resolves(writer, reader, written)
            for f in reader.parsed["fields"]:
                name = f["name"]
                expected = written[name] if name in written else f["default"]
                got = read[name]
                if hasattr(got, "timestamp"):  # timestamp-millis read back as datetime
                    got = round(got.timestamp() * 1000)
                assert got == expected, f"v{writer.version} -> v{reader.version}: {name}"


@settings(max_examples=60)
@given(REQUESTS)
def test_old_and_new_request_readers_read_each_others_data(request: SynthesisRequest) -> None:
    full = model.request_to_avro(request)
    full["created_at"] = max(0, min(full["created_at"], 253_402_300_799_000))  # datetime's range
    full["deadline"] = None
    _check_every_pair(codec.REQUEST_SCHEMAS, full)


@settings(max_examples=30)
@given(RESULTS)
def test_result_readers_read_each_others_data(result: model.SynthesisResult) -> None:
    full = model.result_to_avro(result)
    full["completed_at"] = 0
    if full["audio"] is not None:
        full["audio"]["presigned_url_expires_at"] = None
    _check_every_pair(codec.RESULT_SCHEMAS, full)


# ------------------------------------------------------------------ the checker catches bad changes


def _candidate(change: Any) -> list[tuple[str, Any]]:
    raw = copy.deepcopy(_raw("synthesis_request", len(codec.REQUEST_SCHEMAS.versions)))
    change(raw)
    return [*_labelled(codec.REQUEST_SCHEMAS), ("candidate", fastavro.parse_schema(raw, _force=True))]


def _field(raw: dict[str, Any], name: str) -> dict[str, Any]:
    return next(f for f in raw["fields"] if f["name"] == name)


def test_new_field_without_default_is_refused() -> None:
    problems = _candidate(lambda raw: raw["fields"].append({"name": "priority", "type": "int"}))
    messages = [str(p) for p in full_transitive_problems(problems)]
    # New readers cannot read old data: the field is missing there and has no default.
    assert any("v1 -> candidate: priority" in m and "no default" in m for m in messages)
    assert all("candidate -> v" not in m for m in messages), "old readers just ignore the field"


def test_removing_a_field_without_default_is_refused() -> None:
    def drop_text(raw: dict[str, Any]) -> None:
        raw["fields"] = [f for f in raw["fields"] if f["name"] != "text"]

    messages = [str(p) for p in full_transitive_problems(_candidate(drop_text))]
    assert any(m.startswith("candidate -> v1: text") for m in messages)


def test_removing_an_enum_symbol_without_a_default_is_refused() -> None:
    def drop_mp3(raw: dict[str, Any]) -> None:
        enum = _field(raw, "output_format")["type"]
        enum["symbols"].remove("MP3")
        del enum["default"]

    messages = [str(p) for p in full_transitive_problems(_candidate(drop_mp3))]
    assert any("v2 -> candidate: output_format" in m and "MP3" in m for m in messages)


def test_adding_an_enum_symbol_is_fine_because_the_enum_has_a_default() -> None:
    problems = _candidate(lambda raw: _field(raw, "output_format")["type"]["symbols"].append("AAC"))
    assert full_transitive_problems(problems) == []


def test_changing_a_type_is_refused_in_the_direction_that_breaks() -> None:
    def speed_to_string(raw: dict[str, Any]) -> None:
        _field(raw, "speed").update(type="string", default="1.0")

    messages = [str(p) for p in full_transitive_problems(_candidate(speed_to_string))]
    assert any("speed: float cannot be read as string" in m for m in messages)


def test_promotions_work_one_way_only() -> None:
    def record(field_type: str) -> Any:
        return fastavro.parse_schema(
            {"type": "record", "name": "R", "fields": [{"name": "x", "type": field_type}]}, _force=True
        )

    assert read_problems(record("int"), record("long")) == []
    assert read_problems(record("float"), record("double")) == []
    assert read_problems(record("long"), record("int")) != []
    assert full_transitive_problems([("a", record("int")), ("b", record("long"))]) != []


def test_a_union_branch_removed_from_the_voice_is_refused() -> None:
    def drop_prompt_audio(raw: dict[str, Any]) -> None:
        voice = _field(raw, "voice")
        voice["type"] = [b for b in voice["type"] if b["name"] != "PromptAudioVoice"]

    messages = [str(p) for p in full_transitive_problems(_candidate(drop_prompt_audio))]
    assert any("v1 -> candidate: voice" in m and "PromptAudioVoice" in m for m in messages)


def test_renaming_the_record_is_refused() -> None:
    messages = [
        str(p) for p in full_transitive_problems(_candidate(lambda raw: raw.update(name="SpeechRequest")))
    ]
    assert any("is not" in m for m in messages)


def test_optional_field_with_null_default_is_the_safe_evolution() -> None:
    def add_optional(raw: dict[str, Any]) -> None:
        raw["fields"].append({"name": "priority", "type": ["null", "int"], "default": None})

    assert full_transitive_problems(_candidate(add_optional)) == []
