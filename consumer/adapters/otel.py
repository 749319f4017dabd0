"""Tracer on the OpenTelemetry SDK: one CONSUMER span per request, child of the request's
traceparent, exported in batches. Used only when TTS_TRACING_EXPORTER is otlp or console."""

from __future__ import annotations

from collections.abc import Mapping

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from opentelemetry.trace import NonRecordingSpan, SpanKind, Status, StatusCode, TraceFlags
from opentelemetry.trace import SpanContext as OtelSpanContext

from consumer.core.tracing import Span, SpanContext
from consumer.errors import ConfigurationError


class _OtelSpan:
    def __init__(self, span: trace.Span) -> None:
        self._span = span
        ctx = span.get_span_context()
        self.context = SpanContext(
            f"{ctx.trace_id:032x}", f"{ctx.span_id:016x}", f"{int(ctx.trace_flags):02x}"
        )

    def end(self, outcome: str, attributes: Mapping[str, str | int | bool]) -> None:
        self._span.set_attributes(dict(attributes))
        if outcome in ("failed", "dead_lettered"):
            self._span.set_status(Status(StatusCode.ERROR, outcome))
        self._span.end()


class OtelTracer:
    def __init__(self, exporter: str, *, service_name: str, instance_id: str) -> None:
        span_exporter: SpanExporter
        if exporter == "console":
            span_exporter = ConsoleSpanExporter()
        elif exporter == "otlp":
            try:
                from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
            except ImportError as exc:
                raise ConfigurationError("TTS_TRACING_EXPORTER=otlp needs tts-stream[otel]") from exc
            span_exporter = (
                OTLPSpanExporter()
            )  # endpoint etc. from the standard OTEL_EXPORTER_OTLP_* variables
        else:
            raise ConfigurationError(f"unknown tracing exporter {exporter!r}: use none, otlp or console")
        resource = Resource.create({"service.name": service_name, "service.instance.id": instance_id})
        self._provider = TracerProvider(resource=resource)
        self._provider.add_span_processor(BatchSpanProcessor(span_exporter))
        self._tracer = self._provider.get_tracer("tts_stream.worker")

    def start(self, parent: SpanContext | None, attributes: Mapping[str, str | int]) -> Span:
        context = None
        if parent is not None:
            remote = OtelSpanContext(
                trace_id=int(parent.trace_id, 16),
                span_id=int(parent.span_id, 16),
                is_remote=True,
                trace_flags=TraceFlags(int(parent.flags, 16)),
            )
            context = trace.set_span_in_context(NonRecordingSpan(remote))
        span = self._tracer.start_span(
            "tts.synthesize", context=context, kind=SpanKind.CONSUMER, attributes=dict(attributes)
        )
        return _OtelSpan(span)

    def shutdown(self) -> None:
        self._provider.shutdown()
