"""Baseline (a): the per-message consumer most hand-written services start as.

Poll one message, decode, validate, look the cache up, synthesise, post-process, upload, write
the cache, produce the result, flush, commit synchronously — then the next message. Same codec,
keys, engine, finisher, Redis and S3 as the worker, so the comparison measures the pipeline,
not different parts. Run as its own process: `python -m bench.baselines.naive_consumer`.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from dataclasses import asdict

import redis
from confluent_kafka import Consumer, Producer

from consumer.adapters.s3 import S3ObjectStore
from consumer.app import build_finisher
from consumer.engine import AudioBuffer, SynthesisTask
from consumer.engines import create_engine
from consumer.ports import CachedAudio, FinishSpec
from consumer.settings import WorkerSettings
from schemas.codec import request_codec, result_codec
from schemas.keys import CacheKeyInputs, ResolvedVoice, cache_key, normalise_text
from schemas.model import AudioDescriptor, PresetVoice, ResultStatus, SynthesisResult, Timings, now_ms
from schemas.validation import validate_request


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--topic", required=True)
    parser.add_argument("--results", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--count", type=int, required=True)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    settings = WorkerSettings(http_port=0)
    engine = create_engine(settings)
    engine.load()
    engine.warm_up()
    finisher = build_finisher(settings)
    profile = finisher.profile(settings.loudness_lufs)
    store = S3ObjectStore.from_settings(settings)
    cache = redis.Redis.from_url(settings.redis_url.get_secret_value())
    requests = request_codec()
    results = result_codec()
    base = settings.kafka.librdkafka_config()
    consumer = Consumer(
        {**base, "group.id": args.group, "auto.offset.reset": "earliest", "enable.auto.commit": False}
    )
    producer = Producer({**base, "enable.idempotence": True, "acks": "all"})
    consumer.subscribe([args.topic])
    done = 0
    while done < args.count:
        message = consumer.poll(1.0)
        if message is None or message.error():
            continue
        taken = now_ms()
        request = requests.decode(message.value())
        validate_request(request)
        assert isinstance(request.voice, PresetVoice)
        key = cache_key(
            CacheKeyInputs.for_request(
                request,
                engine=engine.name,
                model_version=engine.model_version,
                voice=ResolvedVoice(preset=request.voice.name),
                postprocess=profile,
            )
        )
        cached = cache.get(f"tts:{{{key}}}:result")
        synthesis_ms = 0
        if cached is not None:
            audio = CachedAudio(**json.loads(cached))
            hit = True
        else:
            started = time.perf_counter()
            (outcome,) = engine.synthesize(
                [SynthesisTask(key, normalise_text(request.text), preset=request.voice.name)]
            )
            assert isinstance(outcome, AudioBuffer)
            synthesis_ms = int((time.perf_counter() - started) * 1000)
            (encoded,) = finisher.finish(
                [(outcome, FinishSpec(request.output_format, request.sample_rate_hz, -16.0))]
            )
            object_key = f"baseline/{encoded.sha256}.{request.output_format.extension}"
            store.put(settings.s3_audio_bucket, object_key, encoded.data, content_type=encoded.content_type)
            audio = CachedAudio(
                f"s3://{settings.s3_audio_bucket}/{object_key}",
                encoded.content_type,
                len(encoded.data),
                encoded.duration_seconds,
                encoded.sample_rate_hz,
                encoded.sha256,
                now_ms(),
            )
            cache.set(f"tts:{{{key}}}:result", json.dumps(asdict(audio)), ex=3600)
            hit = False
        completed = now_ms()
        result = SynthesisResult(
            request_id=request.request_id,
            status=ResultStatus.SUCCEEDED,
            engine=engine.name,
            model_version=engine.model_version,
            timings=Timings(taken - request.created_at_ms, synthesis_ms, completed - request.created_at_ms),
            completed_at_ms=completed,
            cache_key=key,
            audio=AudioDescriptor(
                audio.uri,
                audio.content_type,
                audio.size_bytes,
                audio.duration_seconds,
                audio.sample_rate_hz,
                audio.sha256,
            ),
            cache_hit=hit,
        )
        producer.produce(args.results, results.encode(result), key=request.request_id.encode())
        producer.flush()
        consumer.commit(message=message, asynchronous=False)
        done += 1
    consumer.close()
    engine.close()


if __name__ == "__main__":
    main()
