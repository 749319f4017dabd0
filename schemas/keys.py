"""Canonical text normalisation, the routing key and the cache key (a contract: docs/keys.md).

Both keys are sha256 over the same canonical encoding, a fixed sequence of named fields:

    domain || 0x00 || field_1 || field_2 || ...
    field  = u8(len(name)) || name || u32be(len(value)) || value      (name and value UTF-8)

The routing key is computed by producers from what the request *says* (voice reference as
written). The cache key is computed by the worker from what the request *means*: the engine and
model version, the voice's *content* hash, the normalised text and every parameter that changes
the audio. Changing either encoding is a breaking change: bump the domain string.
"""

from __future__ import annotations

import functools
import hashlib
import re
import struct
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass

from schemas.model import PresetVoice, RegisteredVoice, SynthesisRequest, Voice

ROUTING_KEY_DOMAIN = "tts-stream/routing-key/v1"
CACHE_KEY_DOMAIN = "tts-stream/cache-key/v1"
ROUTING_KEY_BYTES = 16

_HORIZONTAL_SPACE = re.compile(r"[^\S\n]+")  # whitespace except the line feed
_SPACE_AROUND_NEWLINE = re.compile(r" ?\n ?")
_PARAGRAPH_BREAKS = re.compile(r"\n{3,}")


# Anything normalise_text would change, apart from NFC: whitespace other than a single space or
# a line feed, a space next to a line feed or another space, three line feeds, space at the ends.
_IRREGULAR = re.compile(r"[^\S \n]| [ \n]|\n |\n\n\n|\A\s|\s\Z")
_ODD_ASCII_SPACE = re.compile(r"[\t\x0b\x0c\r\x1c-\x1f]")


def _already_normal(text: str) -> bool:
    """The fast path: most texts are already normal, and checking is cheaper than rewriting.

    Plain ASCII text is checked with substring searches (no NFC question arises); the general
    rule is the `_IRREGULAR` pattern plus an NFC check.
    """
    if text.isascii():
        if not text:
            return True
        if text[0].isspace() or text[-1].isspace() or "  " in text:
            return False
        if _ODD_ASCII_SPACE.search(text) is not None:
            return False
        return "\n" not in text or not ("\n " in text or " \n" in text or "\n\n\n" in text)
    return _IRREGULAR.search(text) is None and unicodedata.is_normalized("NFC", text)


def normalise_text(text: str) -> str:
    """Normalise text only where speech cannot differ.

    * Unicode NFC: canonically equivalent sequences (é as one code point or e + combining
      accent) are the same text. NFKC is *not* used: it turns "²" into "2" and "①" into "1",
      which an engine may read differently.
    * Line endings CRLF/CR become LF; runs of other whitespace become one space; spaces at line
      edges and at both ends are dropped; three or more line breaks become two (a paragraph
      break stays a paragraph break, since engines pause on it).
    * Case, punctuation, digits and zero-width joiners are kept: they change pronunciation.
    """
    if _already_normal(text):
        return text
    text = unicodedata.normalize("NFC", text)
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = _HORIZONTAL_SPACE.sub(" ", text)
    text = _SPACE_AROUND_NEWLINE.sub("\n", text)
    text = _PARAGRAPH_BREAKS.sub("\n\n", text)
    return text.strip()


def normalise_language(language: str | None) -> str:
    """BCP-47 tags compare case-insensitively; "_" is a common mistake for "-"."""
    return "" if not language else language.strip().replace("_", "-").lower()


def speed_token(speed: float) -> str:
    """Speeds are compared to a thousandth: float32 noise must not split the cache."""
    return f"{round(float(speed), 3):.3f}"


def loudness_token(lufs: float) -> str:
    return f"{round(float(lufs), 1):.1f}"


@functools.lru_cache(maxsize=256)
def _name_prefix(name: str) -> bytes:
    encoded = name.encode("utf-8")
    if len(encoded) > 255:
        raise ValueError(f"field name {name[:20]!r}... is longer than 255 bytes")
    return struct.pack(">B", len(encoded)) + encoded


def canonical_encoding(domain: str, fields: Iterable[tuple[str, str]]) -> bytes:
    """domain || 0x00 || (u8 name length || name || u32be value length || value)* in UTF-8."""
    parts = [domain.encode("utf-8"), b"\x00"]
    append = parts.append
    for name, value in fields:
        value_bytes = value.encode("utf-8")
        append(_name_prefix(name))
        append(len(value_bytes).to_bytes(4, "big"))
        append(value_bytes)
    return b"".join(parts)


def _voice_reference(voice: Voice) -> str:
    if isinstance(voice, PresetVoice):
        return f"preset:{voice.name}"
    if isinstance(voice, RegisteredVoice):
        return f"registered:{voice.ref}"
    return f"prompt:{voice.audio_uri}\n{normalise_text(voice.transcript)}"


def routing_key(request: SynthesisRequest) -> str:
    """Message key for a request: identical requests share a partition (and so coalesce)."""
    text = normalise_text(request.text).encode("utf-8")
    encoding = b"".join(
        (
            _ROUTING_PREFIX,
            len(text).to_bytes(4, "big"),
            text,
            _routing_tail(
                request.voice,
                request.language,
                request.style_instruction,
                # Tokens, not floats, as cache keys: -0.0 == 0.0 but their tokens differ.
                speed_token(request.speed),
                request.output_format.value,
                request.sample_rate_hz,
                None if request.loudness_lufs is None else loudness_token(request.loudness_lufs),
            ),
        )
    )
    return hashlib.sha256(encoding).digest()[:ROUTING_KEY_BYTES].hex()


# The encoding up to the text's length: the domain, its terminator and the text field's name.
_ROUTING_PREFIX = ROUTING_KEY_DOMAIN.encode("utf-8") + b"\x00" + _name_prefix("text")


@functools.lru_cache(maxsize=4096)
def _routing_tail(
    voice: Voice,
    language: str | None,
    style_instruction: str | None,
    speed: str,
    output_format: str,
    sample_rate_hz: int | None,
    loudness: str | None,
) -> bytes:
    """Fields 2-8 of the routing key's encoding. Only the text varies much between requests;
    the rest takes a handful of values per producer, so it is encoded once and cached."""
    return canonical_encoding(
        "",
        (
            ("voice", _voice_reference(voice)),
            ("language", normalise_language(language)),
            ("style", normalise_text(style_instruction or "")),
            ("speed", speed),
            ("format", output_format),
            ("sample_rate", str(sample_rate_hz or "native")),
            ("loudness", loudness or ""),
        ),
    )[1:]  # drop the empty domain's terminator


@dataclass(frozen=True, slots=True)
class ResolvedVoice:
    """A voice as the worker resolved it: preset name, or content id plus prompt transcript."""

    preset: str | None = None
    content_id: str | None = None
    transcript: str = ""

    def token(self) -> str:
        if self.preset is not None:
            return f"preset:{self.preset}"
        return f"content:{self.content_id}"


@dataclass(frozen=True, slots=True)
class CacheKeyInputs:
    """Everything that changes the produced audio, already resolved by the worker."""

    engine: str
    model_version: str
    voice: ResolvedVoice
    text: str
    language: str | None
    style_instruction: str | None
    speed: float
    output_format: str
    sample_rate_hz: int | None
    postprocess: str  # e.g. "lufs=-16.0;tp=-1.0": the audio pipeline's own settings

    @classmethod
    def for_request(
        cls,
        request: SynthesisRequest,
        *,
        engine: str,
        model_version: str,
        voice: ResolvedVoice,
        postprocess: str,
    ) -> CacheKeyInputs:
        """The inputs for `request`: its own fields, plus what the worker resolved for it (the
        voice's content, the post-processing profile). Which request fields shape the audio is
        decided here, once."""
        return cls(
            engine=engine,
            model_version=model_version,
            voice=voice,
            text=request.text,
            language=request.language,
            style_instruction=request.style_instruction,
            speed=request.speed,
            output_format=request.output_format.value,
            sample_rate_hz=request.sample_rate_hz,
            postprocess=postprocess,
        )


def cache_key(inputs: CacheKeyInputs) -> str:
    """The authoritative cache key: 64 lowercase hex characters."""
    fields = (
        ("engine", inputs.engine),
        ("model_version", inputs.model_version),
        ("voice", inputs.voice.token()),
        ("voice_transcript", normalise_text(inputs.voice.transcript)),
        ("text", normalise_text(inputs.text)),
        ("language", normalise_language(inputs.language)),
        ("style", normalise_text(inputs.style_instruction or "")),
        ("speed", speed_token(inputs.speed)),
        ("format", inputs.output_format),
        ("sample_rate", str(inputs.sample_rate_hz or "native")),
        ("postprocess", inputs.postprocess),
    )
    return hashlib.sha256(canonical_encoding(CACHE_KEY_DOMAIN, fields)).hexdigest()
