"""Dead-letter parsing, filters and replay planning (no Kafka: records are built by hand)."""

from __future__ import annotations

import pytest

from schemas import dlq
from schemas.codec import request_codec
from schemas.model import PresetVoice, SynthesisRequest
from schemas.topics import TopicNames
from tts_stream.ops.dlq import (
    DeadLetter,
    DlqFilter,
    Marker,
    parse_letter_id,
    plan_replay,
    replay_headers,
)
from tts_stream.ops.errors import BadArgument
from tts_stream.ops.kafka_read import Record

TOPICS = TopicNames(requests="req", bulk="bulk", dlq="dlq", dlq_replays="dlq.replays")
CODEC = request_codec()


def request_bytes(request_id: str) -> bytes:
    return CODEC.encode(SynthesisRequest(request_id, "hello", PresetVoice("en-us"), created_at_ms=1))


def letter(
    offset: int,
    value: bytes = b"\x00junk",
    *,
    reason: str = "CRASH_LOOP",
    source: str | None = "req",
    failed_at: int = 1_000,
    extra: tuple[tuple[str, bytes], ...] = (),
) -> DeadLetter:
    headers = [("traceparent", b"00-abc-def-01"), *extra]
    provenance = {
        dlq.SOURCE_PARTITION: "2",
        dlq.SOURCE_OFFSET: "17",
        dlq.REASON: reason,
        dlq.ERROR: "boom",
        dlq.FAILED_AT: str(failed_at),
        dlq.WORKER: "w-1",
        dlq.ATTEMPTS: "3",
    }
    if source is not None:
        provenance[dlq.SOURCE_TOPIC] = source
    headers += [(k, v.encode()) for k, v in provenance.items()]
    return DeadLetter(Record("dlq", 0, offset, failed_at, b"key", value, tuple(headers)))


class Index:
    def __init__(self, answered: set[str] = frozenset()) -> None:  # type: ignore[assignment]
        self.answered = set(answered)

    def get(self, request_id: str) -> bytes | None:
        return b"x" if request_id in self.answered else None


class BrokenIndex:
    def get(self, request_id: str) -> bytes | None:
        raise RuntimeError("redis down")


def test_letter_ids_parse_and_bad_ones_say_what_is_expected() -> None:
    assert parse_letter_id("0:42") == (0, 42)
    assert parse_letter_id(" 3:0 ") == (3, 0)
    for bad in ("", "0", "a:1", "1:-2", "0:1:2", "0 42"):
        with pytest.raises(BadArgument, match="PARTITION:OFFSET"):
            parse_letter_id(bad)


def test_provenance_is_read_from_headers() -> None:
    d = letter(5, extra=((dlq.REPLAY_COUNT, b"2"),))
    assert d.id == "0:5"
    assert d.coordinates == "dlq/0/5"
    assert (d.source_topic, d.source_partition, d.source_offset) == ("req", 2, 17)
    assert (d.reason, d.error, d.worker, d.attempts, d.failed_at_ms) == ("CRASH_LOOP", "boom", "w-1", 3, 1000)
    assert d.replay_count == 2
    assert d.summary()["value_bytes"] == len(b"\x00junk")


def test_filters_by_time_reason_and_source() -> None:
    early, late = letter(1, failed_at=1_000), letter(2, reason="BAD_MAGIC", source="bulk", failed_at=5_000)
    assert DlqFilter(since_ms=2_000).matches(late) and not DlqFilter(since_ms=2_000).matches(early)
    assert DlqFilter(until_ms=2_000).matches(early) and not DlqFilter(until_ms=2_000).matches(late)
    assert DlqFilter(reasons=frozenset({"BAD_MAGIC"})).matches(late)
    assert not DlqFilter(reasons=frozenset({"BAD_MAGIC"})).matches(early)
    assert DlqFilter(source_topics=frozenset({"bulk"})).matches(late)
    assert not DlqFilter(source_topics=frozenset({"bulk"})).matches(early)
    with pytest.raises(BadArgument, match="later than"):
        DlqFilter(since_ms=10, until_ms=5)


def test_replayed_record_keeps_original_headers_drops_provenance_and_counts() -> None:
    d = letter(1, extra=((dlq.REPLAY_COUNT, b"1"), (dlq.REPLAYED_AT, b"5")))
    headers = replay_headers(d, 2, 99)
    names = [k for k, _ in headers]
    assert ("traceparent", b"00-abc-def-01") in headers
    assert not [k for k in names if k in dlq.PROVENANCE_HEADERS]
    assert names.count(dlq.REPLAY_COUNT) == 1 and names.count(dlq.REPLAYED_AT) == 1
    assert dict(headers)[dlq.REPLAY_COUNT] == b"2"
    assert dict(headers)[dlq.REPLAYED_AT] == b"99"


def test_marker_round_trips() -> None:
    marker = Marker(123, 2, "req", "r-1")
    assert Marker.from_json(marker.to_json()) == marker


def plan(letters: list[DeadLetter], markers: dict[str, Marker] | None = None, **kw: object) -> list:
    return plan_replay(
        letters, markers or {}, topics=TOPICS, codec=CODEC, results=kw.pop("results", Index()), **kw
    )  # type: ignore[arg-type]


def test_a_fresh_dead_letter_goes_back_to_its_source_lane() -> None:
    (p,) = plan([letter(1, request_bytes("r-1"))])
    assert (p.status, p.target_topic, p.request_id, p.replay_count) == ("planned", "req", "r-1", 1)


def test_an_already_replayed_dead_letter_is_refused_unless_forced() -> None:
    d = letter(1, request_bytes("r-1"))
    markers = {d.coordinates: Marker(5, 1, "req", "r-1")}
    (p,) = plan([d], markers)
    assert p.status == "skipped" and "already replayed" in p.note and "--force" in p.note
    (forced,) = plan([d], markers, force=True)
    assert forced.status == "planned" and forced.replay_count == 2


def test_a_request_that_already_has_a_result_is_refused_unless_forced() -> None:
    d = letter(1, request_bytes("r-1"))
    (p,) = plan([d], results=Index({"r-1"}))
    assert p.status == "skipped" and "already has a result" in p.note
    (forced,) = plan([d], results=Index({"r-1"}), force=True)
    assert forced.status == "planned"


def test_two_dead_letters_of_one_request_replay_once() -> None:
    first, second = plan([letter(1, request_bytes("r-1")), letter(2, request_bytes("r-1"))], force=True)
    assert first.status == "planned"
    assert second.status == "skipped" and "0:1" in second.note


def test_an_unavailable_index_does_not_block_the_marker_guarded_replay() -> None:
    (p,) = plan([letter(1, request_bytes("r-1"))], results=BrokenIndex())
    assert p.status == "planned" and "not checked" in p.note


def test_undecodable_dead_letters_can_be_replayed_after_a_fix() -> None:
    (p,) = plan([letter(1, b"\x00\x00\x00\x00\x07rest", reason="NO_REGISTRY")])
    assert p.status == "planned" and p.request_id is None


def test_replay_count_continues_from_the_dead_letters_own_header() -> None:
    (p,) = plan([letter(1, extra=((dlq.REPLAY_COUNT, b"3"),))])
    assert p.replay_count == 4


def test_target_must_be_a_lane_of_this_configuration() -> None:
    with pytest.raises(BadArgument, match="not a request lane"):
        plan([letter(1, source="somewhere.else")])
    with pytest.raises(BadArgument, match="--lane"):
        plan([letter(1, source=None)])
    (p,) = plan([letter(1, source="somewhere.else")], lane="bulk")
    assert p.target_topic == "bulk"
