"""Dead letters: read them with their provenance, decode them, replay them once.

A dead letter is the original key, value and headers of a request plus provenance headers
(schemas/dlq.py). It is named by its own coordinates in the dead-letter topic, `PARTITION:OFFSET`.

Replay is idempotent and recorded:

1. A transactional producer with one fixed transactional id per dead-letter topic starts; its
   `init_transactions` fences any other replay still running and settles its transaction.
2. The replay markers (a compacted topic keyed by dead-letter coordinates) are read, committed
   records only, so everything replayed before this point is known.
3. Each dead letter is planned: refused when a marker says it was replayed, when the result
   index already has a result for its request id, or when another dead letter of the same
   request id is in the same replay (`force` lifts the first two).
4. In one Kafka transaction: each planned dead letter goes back to its source lane (original key,
   value and headers, provenance removed, `tts-dlq-replayed-at-ms` and `tts-dlq-replay-count`
   added), and a marker record goes to the markers topic. Either both or neither are visible to
   the workers (read_committed), so a crash mid-replay cannot replay twice or lose the record.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from schemas import dlq
from schemas.codec import AvroCodec
from schemas.errors import DecodeError
from schemas.model import SynthesisRequest, voice_label
from schemas.topics import TopicNames
from tts_stream.ops.errors import BadArgument, OpsError, ServiceUnavailable
from tts_stream.ops.kafka_read import Record, TopicReader

log = logging.getLogger(__name__)

_ID = re.compile(r"(\d{1,6}):(\d{1,19})")
DLQ_HEADER_PREFIX = "tts-dlq-"


def parse_letter_id(text: str) -> tuple[int, int]:
    """`PARTITION:OFFSET` (as `dlq list` prints it) -> (partition, offset)."""
    match = _ID.fullmatch(text.strip())
    if match is None:
        raise BadArgument(f"{text!r} is not a dead-letter id: expected PARTITION:OFFSET, e.g. 0:42")
    return int(match[1]), int(match[2])


def _int(text: str | None) -> int | None:
    if text is None or not text.strip():
        return None
    try:
        return int(text)
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class DeadLetter:
    record: Record

    @property
    def id(self) -> str:
        return f"{self.record.partition}:{self.record.offset}"

    @property
    def coordinates(self) -> str:
        """The marker key: the dead letter's place in its topic."""
        return f"{self.record.topic}/{self.record.partition}/{self.record.offset}"

    @property
    def source_topic(self) -> str | None:
        return self.record.header(dlq.SOURCE_TOPIC)

    @property
    def source_partition(self) -> int | None:
        return _int(self.record.header(dlq.SOURCE_PARTITION))

    @property
    def source_offset(self) -> int | None:
        return _int(self.record.header(dlq.SOURCE_OFFSET))

    @property
    def reason(self) -> str:
        return self.record.header(dlq.REASON) or "UNKNOWN"

    @property
    def error(self) -> str:
        return self.record.header(dlq.ERROR) or ""

    @property
    def failed_at_ms(self) -> int | None:
        return _int(self.record.header(dlq.FAILED_AT)) or self.record.timestamp_ms

    @property
    def worker(self) -> str | None:
        return self.record.header(dlq.WORKER)

    @property
    def attempts(self) -> int | None:
        return _int(self.record.header(dlq.ATTEMPTS))

    @property
    def replay_count(self) -> int:
        """How often the request had been replayed before it landed here again."""
        return _int(self.record.header(dlq.REPLAY_COUNT)) or 0

    @property
    def replayed_at_ms(self) -> int | None:
        return _int(self.record.header(dlq.REPLAYED_AT))

    def summary(self) -> dict[str, Any]:
        """Provenance as plain values (what `dlq list --json` prints)."""
        return {
            "id": self.id,
            "reason": self.reason,
            "error": self.error,
            "failed_at_ms": self.failed_at_ms,
            "source_topic": self.source_topic,
            "source_partition": self.source_partition,
            "source_offset": self.source_offset,
            "worker": self.worker,
            "attempts": self.attempts,
            "replay_count": self.replay_count,
            "replayed_at_ms": self.replayed_at_ms,
            "value_bytes": len(self.record.value),
        }


@dataclass(frozen=True)
class DlqFilter:
    since_ms: int | None = None
    until_ms: int | None = None
    reasons: frozenset[str] = frozenset()
    source_topics: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        if self.since_ms is not None and self.until_ms is not None and self.since_ms > self.until_ms:
            raise BadArgument("--since is later than --until: nothing could match")

    def matches(self, letter: DeadLetter) -> bool:
        at = letter.failed_at_ms
        if self.since_ms is not None and (at is None or at < self.since_ms):
            return False
        if self.until_ms is not None and (at is None or at > self.until_ms):
            return False
        if self.reasons and letter.reason.upper() not in self.reasons:
            return False
        return not (self.source_topics and letter.source_topic not in self.source_topics)


@dataclass(frozen=True)
class Listing:
    letters: list[DeadLetter]  # the most recent `limit` matches, oldest first
    matched: int
    scanned: int


def list_dead_letters(reader: TopicReader, topic: str, flt: DlqFilter, limit: int | None = None) -> Listing:
    found: list[DeadLetter] = []
    scanned = 0
    for record in reader.read(topic, since_ms=flt.since_ms):
        scanned += 1
        letter = DeadLetter(record)
        if flt.matches(letter):
            found.append(letter)
    found.sort(key=lambda d: (d.failed_at_ms or 0, d.record.partition, d.record.offset))
    shown = found if limit is None or len(found) <= limit else found[-limit:]
    return Listing(shown, len(found), scanned)


def fetch(reader: TopicReader, topic: str, letter_id: str) -> DeadLetter:
    partition, offset = parse_letter_id(letter_id)
    return DeadLetter(reader.read_one(topic, partition, offset))


@dataclass(frozen=True)
class Decoded:
    request: SynthesisRequest | None
    error: DecodeError | None

    def describe(self, *, with_text: bool = False) -> dict[str, Any]:
        """The request without its text unless asked (the text may be personal data)."""
        if self.request is None:
            assert self.error is not None
            return {
                "decodable": False,
                "decode_reason": self.error.reason.value,
                "decode_error": self.error.detail,
            }
        req = self.request
        out: dict[str, Any] = {
            "decodable": True,
            "request_id": req.request_id,
            "voice": voice_label(req.voice),
            "language": req.language,
            "output_format": req.output_format.value,
            "speed": req.speed,
            "text_chars": len(req.text),
            "created_at_ms": req.created_at_ms,
            "deadline_ms": req.deadline_ms,
            "reply_topic": req.reply_topic,
            "attributes": dict(req.attributes),
        }
        if with_text:
            out["text"] = req.text
        return out


def decode(letter: DeadLetter, codec: AvroCodec[SynthesisRequest]) -> Decoded:
    try:
        return Decoded(codec.decode(letter.record.value), None)
    except DecodeError as exc:
        return Decoded(None, exc)


# -------------------------------------------------------------------------------- replay --


@dataclass(frozen=True)
class Marker:
    """What the markers topic remembers of one replayed dead letter."""

    replayed_at_ms: int
    replay_count: int
    target_topic: str
    request_id: str | None

    def to_json(self) -> bytes:
        return json.dumps(
            {
                "replayed_at_ms": self.replayed_at_ms,
                "replay_count": self.replay_count,
                "target_topic": self.target_topic,
                "request_id": self.request_id,
            },
            separators=(",", ":"),
        ).encode()

    @classmethod
    def from_json(cls, data: bytes) -> Marker:
        body = json.loads(data)
        return cls(
            int(body["replayed_at_ms"]),
            int(body["replay_count"]),
            str(body["target_topic"]),
            body.get("request_id"),
        )


def read_markers(reader: TopicReader, topic: str) -> dict[str, Marker]:
    """Every dead letter replayed so far, by coordinates (the latest marker wins)."""
    markers: dict[str, Marker] = {}
    for record in reader.read(topic):
        if record.key is None:
            continue
        key = record.key.decode("utf-8", "replace")
        if not record.value:  # a tombstone: the marker was deleted on purpose
            markers.pop(key, None)
            continue
        try:
            markers[key] = Marker.from_json(record.value)
        except (ValueError, KeyError, TypeError):
            log.warning("skipped an unreadable replay marker", extra={"offset": record.offset})
    return markers


class ResultLookup(Protocol):
    """Whether a request already has a result (the worker's Redis result index)."""

    def get(self, request_id: str) -> bytes | None: ...


@dataclass
class PlannedReplay:
    letter: DeadLetter
    target_topic: str
    request_id: str | None
    replay_count: int
    status: str = "planned"  # planned | replayed | skipped
    note: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.letter.id,
            "status": self.status,
            "target_topic": self.target_topic,
            "request_id": self.request_id,
            "replay_count": self.replay_count,
            "note": self.note,
        }


def _target(letter: DeadLetter, topics: TopicNames, lane: str | None) -> str:
    if lane is not None:
        return topics.lane(lane)
    source = letter.source_topic
    if source is None:
        raise BadArgument(
            f"dead letter {letter.id} has no {dlq.SOURCE_TOPIC} header: name a lane with --lane"
        )
    if source not in (topics.requests, topics.bulk):
        raise BadArgument(
            f"dead letter {letter.id} came from {source}, which is not a request lane here "
            f"({topics.requests}, {topics.bulk}): check TTS_TOPICS_* or name a lane with --lane"
        )
    return source


def plan_replay(
    letters: Sequence[DeadLetter],
    markers: dict[str, Marker],
    *,
    topics: TopicNames,
    codec: AvroCodec[SynthesisRequest],
    results: ResultLookup | None,
    force: bool = False,
    lane: str | None = None,
) -> list[PlannedReplay]:
    """Decide, for each dead letter, whether it goes back and where (no side effects)."""
    plans: list[PlannedReplay] = []
    seen_requests: dict[str, str] = {}
    for letter in letters:
        decoded = decode(letter, codec)
        request_id = decoded.request.request_id if decoded.request is not None else None
        marker = markers.get(letter.coordinates)
        count = max(letter.replay_count, marker.replay_count if marker else 0) + 1
        plan = PlannedReplay(letter, _target(letter, topics, lane), request_id, count)
        plans.append(plan)
        if marker is not None and not force:
            plan.status, plan.note = (
                "skipped",
                (
                    f"already replayed at {format_ms(marker.replayed_at_ms)} (replay {marker.replay_count}); "
                    "--force replays it again"
                ),
            )
            continue
        if request_id is not None:
            if request_id in seen_requests:
                plan.status = "skipped"
                plan.note = f"request {request_id} is already replayed by {seen_requests[request_id]} here"
                continue
            if results is not None and not force:
                try:
                    answered = results.get(request_id) is not None
                except Exception as exc:  # the index is a safety net; markers still hold
                    log.warning("result index unavailable during replay planning: %s", type(exc).__name__)
                    plan.note = "result index unavailable: not checked"
                    answered = False
                if answered:
                    plan.status = "skipped"
                    plan.note = f"request {request_id} already has a result; --force replays it anyway"
                    continue
            seen_requests[request_id] = letter.id
    return plans


def replay_headers(letter: DeadLetter, count: int, now_ms: int) -> list[tuple[str, bytes]]:
    """The original headers, without any provenance of ours, plus the replay record."""
    kept = [(k, v) for k, v in letter.record.headers if not k.startswith(DLQ_HEADER_PREFIX)]
    return [*kept, (dlq.REPLAYED_AT, str(now_ms).encode()), (dlq.REPLAY_COUNT, str(count).encode())]


def transactional_id(dlq_topic: str) -> str:
    """One per dead-letter topic: two replays at once fence each other instead of racing."""
    return f"tts-dlq-replay.{dlq_topic}"


class Replayer:
    """Plans and executes replays against Kafka (see the module docstring for the protocol)."""

    def __init__(
        self,
        kafka_config: dict[str, Any],
        topics: TopicNames,
        codec: AvroCodec[SynthesisRequest],
        *,
        results: ResultLookup | None = None,
        timeout_s: float = 30.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._config = kafka_config
        self._topics = topics
        self._codec = codec
        self._results = results
        self._timeout_s = timeout_s
        self._clock = clock

    def replay(
        self,
        letters: Sequence[DeadLetter],
        *,
        force: bool = False,
        lane: str | None = None,
        dry_run: bool = False,
    ) -> list[PlannedReplay]:
        from confluent_kafka import KafkaException, Producer

        if not letters:
            return []
        producer: Any = None
        if not dry_run:
            producer = Producer(
                {
                    **self._config,
                    "transactional.id": transactional_id(self._topics.dlq),
                    "enable.idempotence": True,
                    "acks": "all",
                    # The request producers' partitioner: a replay lands where its key always did.
                    "partitioner": "murmur2_random",
                    "transaction.timeout.ms": int(self._timeout_s * 2000),
                }
            )
            try:
                producer.init_transactions(self._timeout_s)
            except KafkaException as exc:
                raise ServiceUnavailable(f"could not start a replay transaction: {exc}") from exc
        with TopicReader(self._config, timeout_s=self._timeout_s) as reader:
            markers = read_markers(reader, self._topics.dlq_replays)
        plans = plan_replay(
            letters,
            markers,
            topics=self._topics,
            codec=self._codec,
            results=self._results,
            force=force,
            lane=lane,
        )
        todo = [p for p in plans if p.status == "planned"]
        if dry_run or not todo:
            return plans
        now_ms = int(self._clock() * 1000)
        try:
            producer.begin_transaction()
            for plan in todo:
                record = plan.letter.record
                producer.produce(
                    plan.target_topic,
                    value=record.value,
                    key=record.key,
                    headers=replay_headers(plan.letter, plan.replay_count, now_ms),
                )
                marker = Marker(now_ms, plan.replay_count, plan.target_topic, plan.request_id)
                producer.produce(
                    self._topics.dlq_replays, value=marker.to_json(), key=plan.letter.coordinates.encode()
                )
            producer.commit_transaction(self._timeout_s)
        except KafkaException as exc:
            _abort(producer, self._timeout_s)
            error = exc.args[0] if exc.args else None
            if error is not None and getattr(error, "fatal", lambda: False)():
                raise OpsError(f"replay fenced or failed for good, nothing was replayed: {exc}") from exc
            raise ServiceUnavailable(f"replay transaction failed, nothing was replayed: {exc}") from exc
        for plan in todo:
            plan.status = "replayed"
        log.info(
            "replayed %d dead letter(s)",
            len(todo),
            extra={"dlq_topic": self._topics.dlq, "ids": [p.letter.id for p in todo]},
        )
        return plans


def _abort(producer: Any, timeout_s: float) -> None:
    try:
        producer.abort_transaction(timeout_s)
    except Exception as exc:  # already fenced or failed: the broker aborts it on timeout
        log.warning("could not abort the replay transaction: %s", exc)


def format_ms(ms: int | None) -> str:
    if ms is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ms / 1000)) + f".{ms % 1000:03d}Z"


def select(letters: Iterable[DeadLetter], ids: Sequence[str]) -> list[DeadLetter]:
    wanted = {parse_letter_id(i) for i in ids}
    return [d for d in letters if (d.record.partition, d.record.offset) in wanted]
