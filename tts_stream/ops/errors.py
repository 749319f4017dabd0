"""Errors of the operator commands: one base, each with the exit status the CLI reports."""

from __future__ import annotations


class OpsError(Exception):
    """Base of every error an operator command reports (exit status 1)."""

    exit_code = 1


class BadArgument(OpsError):
    """The command line asked for something impossible or ambiguous (exit status 2)."""

    exit_code = 2


class NotFound(OpsError):
    """The dead letter, result or topic asked for does not exist (or no longer)."""


class ServiceUnavailable(OpsError):
    """Kafka, Redis or S3 did not answer (exit status 3)."""

    exit_code = 3
