"""Kafka header names of the contract that are not dead-letter provenance (schemas/dlq.py)."""

from __future__ import annotations

# W3C Trace Context: on a request, the caller's span; on its result, the worker's child span.
TRACEPARENT = "traceparent"
