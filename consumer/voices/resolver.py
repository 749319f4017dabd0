"""Resolve a request's voice into what the cache key and the engine need.

The worker calls `VoiceResolver.resolve(voice)` once per distinct voice in a batch:

* preset: no I/O;
* registered voice, by id or alias: alias -> id, id -> metadata (transcript), id -> audio;
* prompt-audio URI: allow-list check, then fetch, decode and canonicalise the object.

Caching (docs/voices.md): prompt audio is immutable per content id and kept in an LRU bounded
by bytes. Everything that can change behind our back -- alias -> id, id -> metadata, URI ->
content id -- is kept for `metadata_ttl_s` (30 s by default), so a re-registered alias, an
edited transcript or an overwritten prompt object is picked up within that time. Misses
("not found") are remembered for `negative_ttl_s` only. Because the key and the prompt handed
to the engine come from the same resolution, the cache key always describes the audio used.

Errors: VoiceNotFound, VoiceNotAllowed, VoiceInvalid (`consumer.errors.VoiceResolutionError`s
carrying their ErrorCode). StorageUnavailable propagates untouched: the pipeline retries, the
request never fails. Thread-safe: the caches take a lock, storage I/O runs outside it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from consumer.audio.prompt import InvalidPromptAudio, PromptLimits, canonicalise, read_canonical
from consumer.engine import AudioBuffer, PromptAudio
from consumer.errors import ObjectNotFound, ObjectTooLarge
from consumer.ports import ObjectStore, Resolution
from consumer.ports import VoiceResolver as VoiceResolverPort
from consumer.voices.allowlist import PromptAllowList
from consumer.voices.cache import SizedLru, TtlCache
from consumer.voices.errors import VoiceInvalid, VoiceNotFound
from consumer.voices.registry import VoiceRecord, VoiceRegistry
from schemas.keys import ResolvedVoice, normalise_text
from schemas.model import PresetVoice, PromptAudioVoice, RegisteredVoice, Voice, voice_label
from schemas.validation import VOICE_ALIAS, VOICE_ID

if TYPE_CHECKING:
    from consumer.settings import WorkerSettings

log = logging.getLogger(__name__)

DEFAULT_METADATA_TTL_S = 30.0
DEFAULT_NEGATIVE_TTL_S = 5.0
DEFAULT_AUDIO_CACHE_BYTES = 64 * 1024 * 1024  # ~11 minutes of 24 kHz float32 prompt audio


_MISSING = "-"  # negative-cache marker


class VoiceResolver:
    def __init__(
        self,
        store: ObjectStore,
        *,
        voices_bucket: str,
        voices_root: str = "",
        allowlist: Sequence[str] = (),
        max_prompt_bytes: int = 10 * 1024 * 1024,
        max_prompt_seconds: float = 30.0,
        metadata_ttl_s: float = DEFAULT_METADATA_TTL_S,
        negative_ttl_s: float = DEFAULT_NEGATIVE_TTL_S,
        audio_cache_bytes: int = DEFAULT_AUDIO_CACHE_BYTES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._limits = PromptLimits(max_bytes=max_prompt_bytes, max_seconds=max_prompt_seconds)
        self._registry = VoiceRegistry(store, voices_bucket, root=voices_root, limits=self._limits)
        self._allowlist = PromptAllowList(allowlist)
        self._ttl = metadata_ttl_s
        self._negative_ttl = min(negative_ttl_s, metadata_ttl_s)
        self._aliases: TtlCache[str, str] = TtlCache(clock=clock)
        self._records: TtlCache[str, VoiceRecord | str] = TtlCache(clock=clock)
        self._uris: TtlCache[str, str] = TtlCache(clock=clock)
        self._audio: SizedLru[str, AudioBuffer] = SizedLru(audio_cache_bytes, lambda a: a.samples.nbytes)

    @classmethod
    def from_settings(cls, store: ObjectStore, settings: WorkerSettings) -> VoiceResolver:
        return cls(
            store,
            voices_bucket=settings.s3_voices_bucket,
            voices_root=settings.s3_voices_prefix,
            allowlist=settings.prompt_audio_allowlist,
            max_prompt_bytes=settings.max_prompt_audio_bytes,
            max_prompt_seconds=settings.max_prompt_audio_seconds,
            metadata_ttl_s=settings.voice_cache_ttl_s,
        )

    def resolve(self, voice: Voice) -> Resolution:
        if isinstance(voice, PresetVoice):
            return Resolution(ResolvedVoice(preset=voice.name), None)
        if isinstance(voice, RegisteredVoice):
            return self._registered(voice.ref)
        return self._prompt_uri(voice)

    # ------------------------------------------------------------------------ registered --

    def _registered(self, ref: str) -> Resolution:
        voice_id = self._voice_id(ref)
        record = self._record(voice_id)
        audio = self._audio.get(voice_id)
        if audio is None:
            try:
                audio = read_canonical(self._registry.audio(voice_id))
            except InvalidPromptAudio as exc:
                raise VoiceInvalid(str(exc)) from exc
            self._audio.put(voice_id, audio)
            log.info(
                "loaded registered voice",
                extra={"voice_id": voice_id, "duration_s": round(audio.duration_seconds, 2)},
            )
        return Resolution(
            ResolvedVoice(content_id=voice_id, transcript=record.transcript),
            PromptAudio(content_id=voice_id, transcript=record.transcript, audio=audio),
        )

    def _voice_id(self, ref: str) -> str:
        if VOICE_ID.fullmatch(ref):
            return ref
        if not VOICE_ALIAS.fullmatch(ref):
            raise VoiceNotFound("the voice reference is neither a voice id nor a voice name")
        cached = self._aliases.get(ref)
        if cached is None:
            alias = self._registry.alias(ref)
            cached = _MISSING if alias is None else alias.voice_id
            self._aliases.put(ref, cached, self._ttl if alias else self._negative_ttl)
        if cached == _MISSING:
            raise VoiceNotFound(f"no voice named {ref!r}")
        return cached

    def _record(self, voice_id: str) -> VoiceRecord:
        cached = self._records.get(voice_id)
        if cached is None:
            record = self._registry.record(voice_id)
            cached = _MISSING if record is None else record
            self._records.put(voice_id, cached, self._ttl if record else self._negative_ttl)
        if isinstance(cached, str):
            raise VoiceNotFound(f"no voice with id {voice_id}")
        return cached

    # ---------------------------------------------------------------------- prompt by URI --

    def _prompt_uri(self, voice: PromptAudioVoice) -> Resolution:
        bucket, key = self._allowlist.check(voice.audio_uri)
        transcript = normalise_text(voice.transcript)
        if not transcript:
            raise VoiceInvalid("the prompt transcript is empty")
        content_id = self._uris.get(voice.audio_uri)
        if content_id == _MISSING:
            raise VoiceNotFound("no prompt audio object at that URI")
        audio = None if content_id is None else self._audio.get(content_id)
        if content_id is None or audio is None:
            content_id, audio = self._fetch_prompt(voice, bucket, key)
        return Resolution(
            ResolvedVoice(content_id=content_id, transcript=transcript),
            PromptAudio(content_id=content_id, transcript=transcript, audio=audio),
        )

    def _fetch_prompt(self, voice: PromptAudioVoice, bucket: str, key: str) -> tuple[str, AudioBuffer]:
        try:
            data = self._store.get(bucket, key, max_bytes=self._limits.max_bytes)
        except ObjectNotFound as exc:
            self._uris.put(voice.audio_uri, _MISSING, self._negative_ttl)
            raise VoiceNotFound("no prompt audio object at that URI") from exc
        except ObjectTooLarge as exc:
            raise VoiceInvalid(f"prompt audio is larger than {self._limits.max_bytes} bytes") from exc
        try:
            prompt = canonicalise(data, self._limits)
        except InvalidPromptAudio as exc:
            raise VoiceInvalid(str(exc)) from exc
        self._audio.put(prompt.content_id, prompt.audio)
        self._uris.put(voice.audio_uri, prompt.content_id, self._ttl)
        log.info(
            "loaded prompt audio",
            extra={
                "voice": voice_label(voice),
                "voice_id": prompt.content_id,
                "duration_s": round(prompt.duration_seconds, 2),
            },
        )
        return prompt.content_id, prompt.audio


if TYPE_CHECKING:
    _conforms: type[VoiceResolverPort] = VoiceResolver
