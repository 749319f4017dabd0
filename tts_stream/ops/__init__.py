"""Operator tooling: dead letters, result lookup, cache control and lag (docs/operations.md).

The logic lives here as plain functions and small classes over the same clients the worker uses
(confluent-kafka, redis, boto3); `tts_stream.ops.cli` and the web console are thin shells over
it. Worker-side dependencies are imported by the modules that need them, never by this package.
"""
