"""The producer side of tts-stream: client library, results subscriber, backfill and CLI.

Imports neither torch nor any worker dependency (redis, boto3): upstream services install
`tts-stream` alone. See docs/producer.md.

    from producer import TtsProducer, ResultSubscriber

    with ResultSubscriber(bootstrap_servers="kafka:9092") as results, \\
         TtsProducer(bootstrap_servers="kafka:9092") as tts:
        request_id = tts.submit("Hello!", voice="preset:en-us")
        tts.flush()
        result = results.wait_for([request_id], timeout_s=60)[request_id]
"""

from producer.client import TtsProducer
from producer.errors import (
    BackfillError,
    DeliveryFailed,
    DeliveryFailure,
    InvalidRequest,
    KafkaRefused,
    KafkaUnavailable,
    ProducerClosed,
    ProducerError,
    ResultTimeout,
    UnsafeProducerConfig,
)
from producer.requests import build_request, parse_voice, validate
from producer.settings import ProducerSettings
from producer.subscriber import ResultSubscriber, StartAt
from schemas.codec import Framing
from schemas.model import (
    AudioFormat,
    ErrorCode,
    PresetVoice,
    PromptAudioVoice,
    RegisteredVoice,
    ResultStatus,
    SynthesisRequest,
    SynthesisResult,
)
from schemas.topics import Lane
from schemas.validation import RequestLimits

__all__ = [
    "AudioFormat",
    "BackfillError",
    "DeliveryFailed",
    "DeliveryFailure",
    "ErrorCode",
    "Framing",
    "InvalidRequest",
    "KafkaRefused",
    "KafkaUnavailable",
    "Lane",
    "PresetVoice",
    "ProducerClosed",
    "ProducerError",
    "ProducerSettings",
    "PromptAudioVoice",
    "RegisteredVoice",
    "RequestLimits",
    "ResultStatus",
    "ResultSubscriber",
    "ResultTimeout",
    "StartAt",
    "SynthesisRequest",
    "SynthesisResult",
    "TtsProducer",
    "UnsafeProducerConfig",
    "build_request",
    "parse_voice",
    "validate",
]
