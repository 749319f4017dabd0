"""The voice registry and resolver on the real S3 server (versitygw in the local stack), with
real speech as prompt audio."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from consumer.adapters.s3 import S3ObjectStore
from consumer.errors import StorageUnavailable
from consumer.voices.errors import VoiceInvalid, VoiceNotAllowed, VoiceNotFound
from consumer.voices.registry import VoiceRegistry
from consumer.voices.resolver import VoiceResolver
from schemas.keys import CacheKeyInputs, cache_key
from schemas.model import PromptAudioVoice, RegisteredVoice
from tests.support.speech import speeches, wav_bytes
from tests.support.stack import StackAddresses, unique_name

FOX = "The quick brown fox jumps over the lazy dog, and then it runs far away."
DOG = "A lazy dog sleeps all day long in the warm afternoon sun."


@pytest.fixture
def store(stack: StackAddresses, s3_client: object, object_store: S3ObjectStore) -> S3ObjectStore:
    return object_store


@pytest.fixture
def root(store: S3ObjectStore, stack: StackAddresses) -> Iterator[str]:
    """A private corner of the voices bucket (and of the audio bucket for prompt objects)."""
    prefix = unique_name("it-voices") + "/"
    yield prefix
    for bucket in (stack.voices_bucket, stack.audio_bucket):
        for key in list(store.list_keys(bucket, prefix)):
            store.delete(bucket, key)


@pytest.fixture(scope="module")
def prompts() -> dict[str, bytes]:
    fox, dog = speeches([(FOX, "en-us"), (DOG, "en-gb")])
    return {
        "fox-44k-stereo": wav_bytes(fox, rate=44_100, channels=2),
        "fox-22k": wav_bytes(fox),
        "dog-22k": wav_bytes(dog),
    }


def key_of(resolution_voice: object) -> str:
    return cache_key(
        CacheKeyInputs(
            engine="cosyvoice",
            model_version="m1",
            voice=resolution_voice,  # type: ignore[arg-type]
            text="Hello there.",
            language=None,
            style_instruction=None,
            speed=1.0,
            output_format="WAV",
            sample_rate_hz=None,
            postprocess="p",
        )
    )


def test_register_then_resolve_by_name_and_id(
    store: S3ObjectStore, stack: StackAddresses, root: str, prompts: dict[str, bytes]
) -> None:
    registry = VoiceRegistry(store, stack.voices_bucket, root=root)
    alias = unique_name("fox")
    outcome = registry.add(alias, prompts["fox-44k-stereo"], FOX, source_name="fox.wav")
    assert outcome.new_voice
    resolver = VoiceResolver(store, voices_bucket=stack.voices_bucket, voices_root=root)
    by_name = resolver.resolve(RegisteredVoice(alias))
    by_id = resolver.resolve(RegisteredVoice(outcome.record.voice_id))
    assert by_name == by_id
    assert by_name.key_voice.content_id == outcome.record.voice_id
    assert by_name.prompt is not None
    assert by_name.prompt.transcript == FOX
    assert by_name.prompt.audio.sample_rate_hz == 24_000
    assert by_name.prompt.audio.duration_seconds == pytest.approx(outcome.record.duration_seconds, abs=1e-3)
    listed = {record.voice_id: aliases for record, aliases in registry.voices()}
    assert listed == {outcome.record.voice_id: [alias]}


def test_re_registering_a_name_with_other_audio_gives_another_id_and_cache_key(
    store: S3ObjectStore, stack: StackAddresses, root: str, prompts: dict[str, bytes]
) -> None:
    registry = VoiceRegistry(store, stack.voices_bucket, root=root)
    alias = unique_name("narrator")
    first = registry.add(alias, prompts["fox-22k"], FOX, source_name="a.wav").record
    resolver = VoiceResolver(store, voices_bucket=stack.voices_bucket, voices_root=root, metadata_ttl_s=0.0)
    before = resolver.resolve(RegisteredVoice(alias))
    second = registry.add(alias, prompts["dog-22k"], FOX, source_name="b.wav")
    assert second.previous_voice_id == first.voice_id
    assert second.record.voice_id != first.voice_id
    after = resolver.resolve(RegisteredVoice(alias))  # TTL 0: seen at once
    assert after.key_voice.content_id == second.record.voice_id
    assert key_of(after.key_voice) != key_of(before.key_voice)
    # The same audio again is the same voice, whatever the file looked like.
    again = registry.add(unique_name("copy"), prompts["fox-22k"], FOX, source_name="c.wav")
    assert again.record.voice_id == first.voice_id
    assert not again.new_voice


def test_remove_is_seen_by_the_resolver(
    store: S3ObjectStore, stack: StackAddresses, root: str, prompts: dict[str, bytes]
) -> None:
    registry = VoiceRegistry(store, stack.voices_bucket, root=root)
    alias = unique_name("gone")
    voice_id = registry.add(alias, prompts["dog-22k"], DOG, source_name="d.wav").record.voice_id
    resolver = VoiceResolver(store, voices_bucket=stack.voices_bucket, voices_root=root, metadata_ttl_s=0.0)
    assert resolver.resolve(RegisteredVoice(alias)).prompt is not None
    registry.remove(alias, purge=True)
    with pytest.raises(VoiceNotFound):
        resolver.resolve(RegisteredVoice(alias))
    with pytest.raises(VoiceNotFound):
        resolver.resolve(RegisteredVoice(voice_id))
    assert list(store.list_keys(stack.voices_bucket, root)) == []


def test_prompt_audio_by_uri_inside_and_outside_the_allow_list(
    store: S3ObjectStore, stack: StackAddresses, root: str, prompts: dict[str, bytes]
) -> None:
    bucket = stack.audio_bucket
    store.put(bucket, f"{root}ok/fox.wav", prompts["fox-22k"], content_type="audio/wav")
    store.put(bucket, f"{root}secret/fox.wav", prompts["fox-22k"], content_type="audio/wav")
    store.put(bucket, f"{root}ok/notes.txt", b"not audio at all", content_type="text/plain")
    resolver = VoiceResolver(
        store,
        voices_bucket=stack.voices_bucket,
        voices_root=root,
        allowlist=[f"{bucket}/{root}ok/"],
        metadata_ttl_s=0.0,
    )
    inside = resolver.resolve(PromptAudioVoice(f"s3://{bucket}/{root}ok/fox.wav", FOX))
    registered = VoiceRegistry(store, stack.voices_bucket, root=root).add(
        None, prompts["fox-22k"], FOX, source_name="fox.wav"
    )
    # A URI and a registration of the same sound are the same voice (and the same cache key).
    assert inside.key_voice.content_id == registered.record.voice_id
    for uri in (
        f"s3://{bucket}/{root}secret/fox.wav",
        f"s3://{bucket}/{root}ok/../secret/fox.wav",
        f"s3://{stack.voices_bucket}/{root}ok/fox.wav",
        f"http://127.0.0.1:7070/{bucket}/{root}ok/fox.wav",
    ):
        with pytest.raises(VoiceNotAllowed):
            resolver.resolve(PromptAudioVoice(uri, FOX))
    with pytest.raises(VoiceNotFound):
        resolver.resolve(PromptAudioVoice(f"s3://{bucket}/{root}ok/missing.wav", FOX))
    with pytest.raises(VoiceInvalid):
        resolver.resolve(PromptAudioVoice(f"s3://{bucket}/{root}ok/notes.txt", FOX))
    # Overwriting the object with other audio changes the content id (TTL 0 here).
    store.put(bucket, f"{root}ok/fox.wav", prompts["dog-22k"], content_type="audio/wav")
    changed = resolver.resolve(PromptAudioVoice(f"s3://{bucket}/{root}ok/fox.wav", FOX))
    assert changed.key_voice.content_id != inside.key_voice.content_id


def test_an_unreachable_store_is_retryable_not_a_failed_voice() -> None:
    dead = S3ObjectStore(
        endpoint_url="http://127.0.0.1:9",  # discard port: nothing listens
        region="us-east-1",
        access_key_id="x",
        secret_access_key="y",
        timeout_s=1.0,
    )
    resolver = VoiceResolver(dead, voices_bucket="tts-voices", allowlist=["tts-audio/p/"])
    with pytest.raises(StorageUnavailable):
        resolver.resolve(RegisteredVoice("someone"))
    with pytest.raises(StorageUnavailable):
        resolver.resolve(PromptAudioVoice("s3://tts-audio/p/x.wav", "Hello."))
