"""Request-reply over Kafka: each replica reads the results topic once and answers its own waiters.

How replicas correlate results: every replica assigns itself all partitions of the results
topic (no consumer group, from the end as it starts) and keeps a table of the request ids it is
waiting for. Results are keyed by request id, so the reader looks at each record's key and
decodes only the ones in its table; everyone else's results cost a dictionary lookup. So each
replica reads every result exactly once, whatever the number of replicas, and nothing about
the workers changes: results stay on the one results topic every other subscriber reads.

Rejected: a reply topic per replica (topics to create and delete as pods come and go, each in
the workers' reply-topic allow-list, and the results missing from the shared topic); polling
the Redis result index (a round trip per waiter per poll, and latency set by the poll interval).
The Redis result index still answers `GET /v1/tts/{id}` on any replica, for results this
replica never waited for.

The reader is a thread (confluent-kafka blocks); futures are resolved on the event loop.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable

from producer.subscriber import ResultSubscriber
from schemas.model import SynthesisResult

log = logging.getLogger(__name__)


class ResultCorrelator:
    def __init__(self, subscriber: ResultSubscriber, loop: asyncio.AbstractEventLoop) -> None:
        self._subscriber = subscriber
        self._loop = loop
        self._waiting: dict[bytes, asyncio.Future[SynthesisResult]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="gateway-results", daemon=True)
        self.last_poll = time.monotonic()
        self.error: BaseException | None = None

    def start(self) -> None:
        self._thread.start()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive() and self.error is None

    def __len__(self) -> int:
        return len(self._waiting)

    def expect(self, request_id: str) -> asyncio.Future[SynthesisResult]:
        """A future for `request_id`'s result. Call before producing the request, on the loop."""
        future: asyncio.Future[SynthesisResult] = self._loop.create_future()
        self._waiting[request_id.encode()] = future
        return future

    def forget(self, request_id: str) -> None:
        self._waiting.pop(request_id.encode(), None)

    def fail(self, request_id: str, exc: BaseException) -> None:
        """End a wait with an error (the request was never delivered); on the loop."""
        future = self._waiting.pop(request_id.encode(), None)
        if future is not None and not future.done():
            future.set_exception(exc)

    def _deliver(self, results: list[SynthesisResult]) -> None:
        for result in results:
            future = self._waiting.pop(result.request_id.encode(), None)
            if future is not None and not future.done():
                future.set_result(result)

    def _run(self) -> None:
        # `in` on the dict from this thread is safe under the GIL; only the loop mutates it.
        wanted: Callable[[bytes | None], bool] = lambda key: key is not None and key in self._waiting  # noqa: E731
        try:
            while not self._stop.is_set():
                results = self._subscriber.poll_batch(0.1, 1000, keep=wanted)
                self.last_poll = time.monotonic()
                if results:
                    self._loop.call_soon_threadsafe(self._deliver, results)
        except BaseException as exc:
            self.error = exc
            log.error("the results reader stopped: %s", exc)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)
        self._subscriber.close()
