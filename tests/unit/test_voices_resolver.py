"""The resolver the worker calls per distinct voice: key voice + engine prompt, with caching."""

from __future__ import annotations

import io

import numpy as np
import pytest
import soundfile as sf

from consumer.engine import PromptAudio
from consumer.errors import PermanentError, StorageUnavailable
from consumer.settings import WorkerSettings
from consumer.voices.errors import VoiceInvalid, VoiceNotAllowed, VoiceNotFound
from consumer.voices.registry import VoiceRegistry, alias_key, record_key
from consumer.voices.resolver import VoiceResolver
from schemas.keys import CacheKeyInputs, ResolvedVoice, cache_key
from schemas.model import ErrorCode, PresetVoice, PromptAudioVoice, RegisteredVoice
from tests.support.memory_store import MemoryObjectStore

VOICES = "voices"
PROMPTS = "prompts"


def prompt_file(seed: int = 0, seconds: float = 3.0) -> bytes:
    rate = 24_000
    rng = np.random.default_rng(seed)
    t = np.arange(round(seconds * rate)) / rate
    samples = 0.3 * np.sin(2 * np.pi * (140 + seed) * t) + 0.01 * rng.standard_normal(len(t))
    buffer = io.BytesIO()
    sf.write(buffer, samples.astype(np.float32), rate, format="FLAC")
    return buffer.getvalue()


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def store() -> MemoryObjectStore:
    return MemoryObjectStore()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def registry(store: MemoryObjectStore) -> VoiceRegistry:
    return VoiceRegistry(store, VOICES)


@pytest.fixture
def resolver(store: MemoryObjectStore, clock: Clock) -> VoiceResolver:
    return VoiceResolver(
        store,
        voices_bucket=VOICES,
        allowlist=[f"{PROMPTS}/ok/"],
        metadata_ttl_s=30,
        negative_ttl_s=5,
        clock=clock,
    )


def key_for(voice: ResolvedVoice) -> str:
    return cache_key(
        CacheKeyInputs(
            engine="cosyvoice",
            model_version="m",
            voice=voice,
            text="Hello.",
            language=None,
            style_instruction=None,
            speed=1.0,
            output_format="WAV",
            sample_rate_hz=None,
            postprocess="p",
        )
    )


def test_presets_need_no_io(resolver: VoiceResolver, store: MemoryObjectStore) -> None:
    store.down = True
    resolution = resolver.resolve(PresetVoice("en-us"))
    assert resolution.key_voice == ResolvedVoice(preset="en-us")
    assert resolution.prompt is None


def test_a_registered_voice_by_alias_and_by_id(
    resolver: VoiceResolver, registry: VoiceRegistry, store: MemoryObjectStore
) -> None:
    record = registry.add("alice", prompt_file(), "Hello  there.", source_name="a.flac").record
    by_alias = resolver.resolve(RegisteredVoice("alice"))
    by_id = resolver.resolve(RegisteredVoice(record.voice_id))
    assert by_alias == by_id
    assert by_alias.key_voice == ResolvedVoice(content_id=record.voice_id, transcript="Hello there.")
    prompt = by_alias.prompt
    assert isinstance(prompt, PromptAudio)
    assert (prompt.content_id, prompt.transcript) == (record.voice_id, "Hello there.")
    assert prompt.audio.sample_rate_hz == 24_000
    assert prompt.audio.duration_seconds == pytest.approx(3.0, abs=1e-3)
    # Cached: further resolutions read nothing.
    reads = sum(store.gets.values())
    for _ in range(5):
        resolver.resolve(RegisteredVoice("alice"))
    assert sum(store.gets.values()) == reads


def test_re_registration_takes_effect_after_the_ttl_and_changes_the_cache_key(
    resolver: VoiceResolver, registry: VoiceRegistry, clock: Clock
) -> None:
    registry.add("alice", prompt_file(seed=1), "Hello.", source_name="a.flac")
    before = resolver.resolve(RegisteredVoice("alice"))
    registry.add("alice", prompt_file(seed=2), "Hello.", source_name="b.flac")
    assert resolver.resolve(RegisteredVoice("alice")) == before  # within the TTL
    clock.now += 31
    after = resolver.resolve(RegisteredVoice("alice"))
    assert after.key_voice.content_id != before.key_voice.content_id
    assert key_for(after.key_voice) != key_for(before.key_voice)
    assert after.prompt is not None and before.prompt is not None
    assert not np.array_equal(after.prompt.audio.samples, before.prompt.audio.samples)


def test_an_edited_transcript_changes_the_key_after_the_ttl(
    resolver: VoiceResolver, registry: VoiceRegistry, clock: Clock
) -> None:
    registry.add("alice", prompt_file(), "Hello.", source_name="a.flac")
    before = resolver.resolve(RegisteredVoice("alice")).key_voice
    registry.add("alice", prompt_file(), "Hello there.", source_name="a.flac")
    clock.now += 31
    after = resolver.resolve(RegisteredVoice("alice")).key_voice
    assert after.content_id == before.content_id
    assert key_for(after) != key_for(before)


def test_unknown_voices_are_not_found_and_remembered_briefly(
    resolver: VoiceResolver, registry: VoiceRegistry, store: MemoryObjectStore, clock: Clock
) -> None:
    for ref in ("nobody", "f" * 64, "NOT-VALID"):
        with pytest.raises(VoiceNotFound) as caught:
            resolver.resolve(RegisteredVoice(ref))
        assert caught.value.code is ErrorCode.VOICE_NOT_FOUND
    reads = store.gets[alias_key("nobody")]
    with pytest.raises(VoiceNotFound):
        resolver.resolve(RegisteredVoice("nobody"))
    assert store.gets[alias_key("nobody")] == reads  # the miss is cached...
    registry.add("nobody", prompt_file(), "Hello.", source_name="a.flac")
    clock.now += 6  # ...for the short negative TTL only
    assert resolver.resolve(RegisteredVoice("nobody")).prompt is not None


def test_a_removed_voice_stops_resolving_after_the_ttl(
    resolver: VoiceResolver, registry: VoiceRegistry, clock: Clock
) -> None:
    voice_id = registry.add("alice", prompt_file(), "Hello.", source_name="a.flac").record.voice_id
    resolver.resolve(RegisteredVoice(voice_id))
    registry.remove(voice_id)
    clock.now += 31
    with pytest.raises(VoiceNotFound):
        resolver.resolve(RegisteredVoice(voice_id))


def test_prompt_uris_inside_the_allow_list(
    resolver: VoiceResolver, store: MemoryObjectStore, clock: Clock
) -> None:
    store.put(PROMPTS, "ok/a.flac", prompt_file(seed=3), content_type="audio/flac")
    voice = PromptAudioVoice("s3://prompts/ok/a.flac", " Hi  there. ")
    first = resolver.resolve(voice)
    assert first.key_voice.transcript == "Hi there."
    assert first.prompt is not None
    reads = store.gets["ok/a.flac"]
    assert resolver.resolve(voice) == first
    assert store.gets["ok/a.flac"] == reads
    # The same URI with new audio gets a new content id once the TTL has passed.
    store.put(PROMPTS, "ok/a.flac", prompt_file(seed=4), content_type="audio/flac")
    clock.now += 31
    assert resolver.resolve(voice).key_voice.content_id != first.key_voice.content_id


@pytest.mark.parametrize(
    ("uri", "error"),
    [
        ("s3://prompts/secret/a.flac", VoiceNotAllowed),
        ("https://prompts.example/ok/a.flac", VoiceNotAllowed),
        ("s3://voices/voices/x/prompt.wav", VoiceNotAllowed),
        ("s3://prompts/ok/../secret/a.flac", VoiceNotAllowed),
        ("s3://prompts/ok/missing.flac", VoiceNotFound),
        ("s3://prompts/ok/text.flac", VoiceInvalid),
        ("s3://prompts/ok/huge.flac", VoiceInvalid),
    ],
)
def test_prompt_uri_failures(
    store: MemoryObjectStore, clock: Clock, uri: str, error: type[PermanentError]
) -> None:
    resolver = VoiceResolver(
        store, voices_bucket=VOICES, allowlist=["prompts/ok/"], max_prompt_bytes=50_000, clock=clock
    )
    store.put(PROMPTS, "ok/text.flac", b"hello, not audio", content_type="audio/flac")
    store.put(PROMPTS, "ok/huge.flac", b"\0" * 60_000, content_type="audio/flac")
    store.put(PROMPTS, "secret/a.flac", prompt_file(), content_type="audio/flac")
    with pytest.raises(error):
        resolver.resolve(PromptAudioVoice(uri, "Hello."))
    assert store.gets["secret/a.flac"] == 0  # refused URIs are never fetched


def test_an_empty_prompt_transcript_is_invalid(resolver: VoiceResolver, store: MemoryObjectStore) -> None:
    store.put(PROMPTS, "ok/a.flac", prompt_file(), content_type="audio/flac")
    with pytest.raises(VoiceInvalid):
        resolver.resolve(PromptAudioVoice("s3://prompts/ok/a.flac", "   "))


def test_storage_outages_propagate_and_are_not_cached_as_misses(
    resolver: VoiceResolver, registry: VoiceRegistry, store: MemoryObjectStore
) -> None:
    registry.add("alice", prompt_file(), "Hello.", source_name="a.flac")
    store.down = True
    with pytest.raises(StorageUnavailable):
        resolver.resolve(RegisteredVoice("alice"))
    with pytest.raises(StorageUnavailable):
        resolver.resolve(PromptAudioVoice("s3://prompts/ok/a.flac", "Hello."))
    store.down = False
    assert resolver.resolve(RegisteredVoice("alice")).prompt is not None


def test_tampered_stored_audio_is_voice_invalid(
    resolver: VoiceResolver, registry: VoiceRegistry, store: MemoryObjectStore
) -> None:
    record = registry.add("alice", prompt_file(), "Hello.", source_name="a.flac").record
    store.objects[(VOICES, record_key(record.voice_id).replace("voice.json", "prompt.wav"))] = (
        b"RIFF-tampered",
        "audio/wav",
        {},
    )
    with pytest.raises(VoiceInvalid):
        resolver.resolve(RegisteredVoice("alice"))


def test_the_audio_cache_is_bounded_by_bytes(store: MemoryObjectStore, registry: VoiceRegistry) -> None:
    three_seconds = 3 * 24_000 * 4
    resolver = VoiceResolver(store, voices_bucket=VOICES, audio_cache_bytes=2 * three_seconds + 100)
    ids = [
        registry.add(f"v{i}", prompt_file(seed=i), "Hello.", source_name="x").record.voice_id
        for i in range(3)
    ]
    for voice_id in ids:
        resolver.resolve(RegisteredVoice(voice_id))
    reads = store.gets.copy()
    resolver.resolve(RegisteredVoice(ids[2]))  # recent: cached
    resolver.resolve(RegisteredVoice(ids[0]))  # evicted: read again
    audio_reads = {key: store.gets[key] - reads[key] for key in store.gets if key.endswith("prompt.wav")}
    assert sorted(audio_reads.values()) == [0, 0, 1]


def test_from_settings_uses_the_deployment_limits(store: MemoryObjectStore) -> None:
    settings = WorkerSettings(
        s3_voices_bucket=VOICES, prompt_audio_allowlist=["prompts/ok/"], max_prompt_audio_bytes=2048
    )
    resolver = VoiceResolver.from_settings(store, settings)
    store.put(PROMPTS, "ok/a.flac", prompt_file(), content_type="audio/flac")
    with pytest.raises(VoiceInvalid, match="larger than 2048"):
        resolver.resolve(PromptAudioVoice("s3://prompts/ok/a.flac", "Hello."))
