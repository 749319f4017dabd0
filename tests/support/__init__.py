"""Helpers shared by the integration, e2e, chaos and benchmark suites."""
