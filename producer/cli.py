"""`tts-stream topics ensure` and `tts-stream topics init-group`."""

from __future__ import annotations

import sys

import click

from producer.admin import (
    PartitionInitState,
    TopicAdminError,
    TopicMissing,
    ensure_topics,
    init_group_offsets,
)
from producer.settings import ProducerSettings
from schemas.topics import default_topic_specs

EXIT_SERVICE_UNAVAILABLE = 3


@click.group()
def topics() -> None:
    """Create and check the Kafka topics."""


@topics.command("ensure")
@click.option(
    "--partitions",
    type=click.IntRange(1, 10_000),
    default=12,
    show_default=True,
    envvar="TTS_TOPIC_PARTITIONS",
    help="Partitions of each request lane and of the results topic.",
)
@click.option(
    "--replication-factor",
    type=click.IntRange(1, 7),
    default=3,
    show_default=True,
    envvar="TTS_TOPIC_REPLICATION_FACTOR",
    help="Use 1 on a single-broker development cluster.",
)
@click.option(
    "--min-insync-replicas",
    type=click.IntRange(1, 7),
    default=2,
    show_default=True,
    envvar="TTS_TOPIC_MIN_INSYNC_REPLICAS",
    help="Capped at the replication factor.",
)
@click.option(
    "--bootstrap-servers",
    envvar="TTS_KAFKA_BOOTSTRAP_SERVERS",
    default=None,
    help="Overrides TTS_KAFKA_BOOTSTRAP_SERVERS.",
)
def ensure(
    partitions: int,
    replication_factor: int,
    min_insync_replicas: int,
    bootstrap_servers: str | None,
) -> None:
    """Create missing topics; report existing ones and how they differ.

    Exits 1 when an existing topic has a different partition count (never changed silently),
    3 when Kafka cannot be reached.
    """
    settings = ProducerSettings()
    config = settings.kafka.librdkafka_config()
    if bootstrap_servers:
        config["bootstrap.servers"] = bootstrap_servers
    specs = default_topic_specs(
        settings.topics,
        partitions=partitions,
        replication_factor=replication_factor,
        min_insync_replicas=min_insync_replicas,
    )
    try:
        reports = ensure_topics(config, specs)
    except TopicAdminError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_SERVICE_UNAVAILABLE)
    for report in reports:
        click.echo(f"{report.state.value:17} {report.describe()}")
    if any(report.is_problem for report in reports):
        sys.exit(1)


@topics.command("init-group")
@click.option("--group", required=True, help="Consumer group of the workers, e.g. tts-worker.")
@click.option(
    "--topic",
    "topic_names",
    multiple=True,
    metavar="TOPIC",
    help="Topic to initialise (repeatable). Default: both request lanes.",
)
@click.option(
    "--bootstrap-servers",
    envvar="TTS_KAFKA_BOOTSTRAP_SERVERS",
    default=None,
    help="Overrides TTS_KAFKA_BOOTSTRAP_SERVERS.",
)
def init_group(group: str, topic_names: tuple[str, ...], bootstrap_servers: str | None) -> None:
    """Commit the log end of every partition, for a GROUP that has never committed anything.

    A consumer group that never committed shows no lag, so KEDA would not scale workers up for
    the first messages; the Helm chart runs this as a hook when topics.job.initGroupOffsets is
    set. Requests already in the topics are skipped, which is why it acts only on a new group:
    a group with any committed offset (on any topic) is left untouched, and so is a group with
    active members. Safe to run any number of times.

    Exits 1 when a topic does not exist, 3 when Kafka cannot be reached.
    """
    settings = ProducerSettings()
    config = settings.kafka.librdkafka_config()
    if bootstrap_servers:
        config["bootstrap.servers"] = bootstrap_servers
    names = list(topic_names) or [settings.topics.requests, settings.topics.bulk]
    try:
        reports = init_group_offsets(config, group, names)
    except TopicMissing as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    except TopicAdminError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_SERVICE_UNAVAILABLE)
    for report in reports:
        click.echo(f"{report.state.value:15} {report.describe()}")
    initialised = sum(r.state is PartitionInitState.INITIALISED for r in reports)
    if initialised == 0 and any(r.state is not PartitionInitState.GROUP_ACTIVE for r in reports):
        click.echo(f"group {group} already has committed offsets: left untouched")
    click.echo(f"group {group}: {initialised} of {len(reports)} partition(s) initialised")
