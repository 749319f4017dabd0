"""The HTTP gateway: REST and OpenAI-compatible speech endpoints in front of the Kafka pipeline.

Producer side: it imports neither torch nor the worker's core. docs/gateway.md describes the API,
how replicas correlate results, and every setting.
"""
