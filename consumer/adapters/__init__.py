"""Adapters: one per outside library, each implementing a port from consumer.ports."""
