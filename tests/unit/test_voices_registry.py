"""The voice registry on an in-memory object store."""

from __future__ import annotations

import hashlib
import io
import json

import numpy as np
import pytest
import soundfile as sf

from consumer.audio.prompt import PromptLimits
from consumer.errors import StorageUnavailable
from consumer.voices.errors import VoiceInvalid, VoiceNotFound
from consumer.voices.registry import VoiceRegistry, alias_key, audio_key, record_key
from tests.support.memory_store import MemoryObjectStore

BUCKET = "voices"


def prompt_file(seed: int = 0, seconds: float = 3.0, rate: int = 44_100) -> bytes:
    rng = np.random.default_rng(seed)
    t = np.arange(round(seconds * rate)) / rate
    samples = 0.3 * np.sin(2 * np.pi * (150 + seed) * t) + 0.01 * rng.standard_normal(len(t))
    buffer = io.BytesIO()
    sf.write(buffer, samples.astype(np.float32), rate, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


@pytest.fixture
def store() -> MemoryObjectStore:
    return MemoryObjectStore()


@pytest.fixture
def registry(store: MemoryObjectStore) -> VoiceRegistry:
    return VoiceRegistry(store, BUCKET, limits=PromptLimits(max_seconds=10), clock=lambda: 1_700_000_000.0)


def test_add_stores_canonical_audio_under_its_hash_with_metadata_and_alias(
    registry: VoiceRegistry, store: MemoryObjectStore
) -> None:
    outcome = registry.add("alice", prompt_file(), "  Hello   there. ", source_name="alice.wav")
    record = outcome.record
    assert outcome.new_voice and not outcome.transcript_changed and outcome.previous_voice_id is None
    wav = store.objects[(BUCKET, audio_key(record.voice_id))][0]
    assert hashlib.sha256(wav).hexdigest() == record.voice_id
    assert sf.info(io.BytesIO(wav)).samplerate == 24_000
    body = json.loads(store.objects[(BUCKET, record_key(record.voice_id))][0])
    assert body["transcript"] == "Hello there."  # normalised, as the cache key sees it
    assert body["version"] == 1
    assert body["source"]["sample_rate_hz"] == 44_100
    assert body["source_name"] == "alice.wav"
    assert body["created_at_ms"] == 1_700_000_000_000
    assert json.loads(store.objects[(BUCKET, alias_key("alice"))][0])["voice_id"] == record.voice_id
    assert registry.voice_id_of("alice") == record.voice_id
    assert registry.voice_id_of(record.voice_id) == record.voice_id
    assert registry.audio(record.voice_id) == wav


def test_adding_the_same_audio_again_is_idempotent(registry: VoiceRegistry, store: MemoryObjectStore) -> None:
    first = registry.add("alice", prompt_file(), "Hello there.", source_name="a.wav")
    count = len(store.objects)
    second = registry.add("alice", prompt_file(), "Hello there.", source_name="a.wav")
    assert second.record == first.record
    assert not second.new_voice
    assert len(store.objects) == count


def test_a_new_transcript_updates_the_record(registry: VoiceRegistry) -> None:
    first = registry.add("alice", prompt_file(), "Hello there.", source_name="a.wav")
    second = registry.add("alice", prompt_file(), "Hello, there!", source_name="a.wav")
    assert second.transcript_changed
    assert second.record.voice_id == first.record.voice_id
    record = registry.record(first.record.voice_id)
    assert record is not None
    assert record.transcript == "Hello, there!"


def test_re_registering_a_name_with_other_audio_moves_it_to_a_new_id(registry: VoiceRegistry) -> None:
    old = registry.add("alice", prompt_file(seed=1), "Hello there.", source_name="a.wav").record
    moved = registry.add("alice", prompt_file(seed=2), "Hello there.", source_name="a2.wav")
    assert moved.record.voice_id != old.voice_id
    assert moved.previous_voice_id == old.voice_id
    assert registry.voice_id_of("alice") == moved.record.voice_id
    assert registry.record(old.voice_id) is not None  # the old voice stays usable by id


def test_list_and_remove(registry: VoiceRegistry, store: MemoryObjectStore) -> None:
    a = registry.add("alice", prompt_file(seed=1), "One.", source_name="a.wav").record
    registry.add("ally", prompt_file(seed=1), "One.", source_name="a.wav")
    b = registry.add("bob", prompt_file(seed=2), "Two.", source_name="b.wav").record
    listed = {record.voice_id: aliases for record, aliases in registry.voices()}
    assert listed == {a.voice_id: ["alice", "ally"], b.voice_id: ["bob"]}

    gone = registry.remove("ally")
    assert (gone.voice_id, gone.aliases) == (None, ["ally"])
    assert registry.record(a.voice_id) is not None

    purged = registry.remove("alice", purge=True)
    assert (purged.voice_id, purged.aliases) == (a.voice_id, ["alice"])
    assert registry.record(a.voice_id) is None
    assert (BUCKET, audio_key(a.voice_id)) not in store.objects

    by_id = registry.remove(b.voice_id)
    assert (by_id.voice_id, by_id.aliases) == (b.voice_id, ["bob"])
    assert store.objects == {}
    with pytest.raises(VoiceNotFound):
        registry.remove("bob")
    with pytest.raises(VoiceNotFound):
        registry.remove(b.voice_id)


@pytest.mark.parametrize("name", ["Alice", "-x", "a" * 65, "a/b", "0" * 64, "al ice"])
def test_bad_names_are_refused(registry: VoiceRegistry, name: str) -> None:
    with pytest.raises(VoiceInvalid, match="voice name"):
        registry.add(name, prompt_file(), "Hello.", source_name="a.wav")


@pytest.mark.parametrize(
    ("transcript", "message"), [("   ", "empty"), ("x" * 1001, "longer"), ("a\x07b", "control")]
)
def test_bad_transcripts_are_refused(registry: VoiceRegistry, transcript: str, message: str) -> None:
    with pytest.raises(VoiceInvalid, match=message):
        registry.add("alice", prompt_file(), transcript, source_name="a.wav")


def test_bad_audio_is_voice_invalid_and_stores_nothing(
    registry: VoiceRegistry, store: MemoryObjectStore
) -> None:
    with pytest.raises(VoiceInvalid, match="not a WAV"):
        registry.add("alice", b"definitely not audio", "Hello.", source_name="a.txt")
    with pytest.raises(VoiceInvalid, match="the limit is 10 s"):
        registry.add("alice", prompt_file(seconds=12), "Hello.", source_name="a.wav")
    assert store.objects == {}


def test_tampered_audio_and_corrupt_records_are_detected(
    registry: VoiceRegistry, store: MemoryObjectStore
) -> None:
    record = registry.add("alice", prompt_file(), "Hello.", source_name="a.wav").record
    wav, content_type, meta = store.objects[(BUCKET, audio_key(record.voice_id))]
    store.objects[(BUCKET, audio_key(record.voice_id))] = (wav[:-2] + b"\x01\x02", content_type, meta)
    with pytest.raises(VoiceInvalid, match="does not match its id"):
        registry.audio(record.voice_id)
    store.objects[(BUCKET, record_key(record.voice_id))] = (b"{not json", "application/json", {})
    with pytest.raises(VoiceInvalid, match="corrupt"):
        registry.record(record.voice_id)


def test_a_root_prefix_isolates_registries(store: MemoryObjectStore) -> None:
    one = VoiceRegistry(store, BUCKET, root="env-a/")
    two = VoiceRegistry(store, BUCKET, root="env-b/")
    one.add("alice", prompt_file(), "Hello.", source_name="a.wav")
    assert two.voices() == []
    assert two.voice_id_of("alice") is None
    assert all(key.startswith("env-a/") for _, key in store.objects)
    with pytest.raises(ValueError, match="end with"):
        VoiceRegistry(store, BUCKET, root="no-slash")


def test_storage_outages_propagate(registry: VoiceRegistry, store: MemoryObjectStore) -> None:
    store.down = True
    with pytest.raises(StorageUnavailable):
        registry.add("alice", prompt_file(), "Hello.", source_name="a.wav")
    with pytest.raises(StorageUnavailable):
        registry.voices()
