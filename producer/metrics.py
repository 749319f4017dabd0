"""Prometheus counters of the producer library, when a caller asks for them.

`TtsProducer(..., metrics_registry=registry)` registers them on the caller's registry (so they
appear on the service's own /metrics); without a registry nothing is imported or counted.
prometheus-client is then the caller's dependency (`pip install prometheus-client`).
Labels are the topic (a configured lane), the error name librdkafka reports and the schema field
— all small, fixed sets.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry


class ProducerMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        from prometheus_client import Counter

        self.submitted = Counter(
            "tts_producer_requests_submitted",
            "Requests handed to the Kafka client.",
            ["topic"],
            registry=registry,
        )
        self.delivered = Counter(
            "tts_producer_requests_delivered",
            "Requests the brokers acknowledged (acks=all).",
            ["topic"],
            registry=registry,
        )
        self.delivery_failures = Counter(
            "tts_producer_delivery_failures",
            "Requests the client gave up delivering, by librdkafka error name.",
            ["topic", "error"],
            registry=registry,
        )
        self.invalid = Counter(
            "tts_producer_invalid_requests",
            "Requests refused by validation before producing, by the first offending field.",
            ["field"],
            registry=registry,
        )
