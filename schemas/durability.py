"""What makes an acknowledged request or result survive a broker's loss, checked at start-up.

`acks=all` means "every *in-sync* replica has it". How many that is depends on the cluster, not
on the client: a topic with replication factor 1, or `min.insync.replicas=1`, acknowledges a
record one broker holds, and that broker's disk is then the only copy; with unclean leader
election on, a replica that missed records can become leader and drop them. The client settings
that matter (acks=all, idempotence, read_committed, transactions) are fixed in code; these are the
cluster's, which only a check can see.

The rules scale with the cluster so a one-broker development stack passes: replication factor at
least min(3, brokers), `min.insync.replicas` at least min(2, replication factor) and below it
(equal, and any one broker down stops every write), unclean leader election off, and the
worker's transaction timeout within the brokers' `transaction.max.timeout.ms`.
Both sides run it: the worker (TTS_DURABILITY_CHECK) and `TtsProducer.check_durability`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class TopicDurability:
    name: str
    replication_factor: int  # the smallest of its partitions'
    min_insync_replicas: int
    unclean_leader_election: bool


@dataclass(frozen=True, slots=True)
class ClusterDurability:
    brokers: int
    topics: tuple[TopicDurability, ...]
    transaction_max_timeout_ms: int | None = None

    def summary(self) -> dict[str, Any]:
        """For the start-up log line."""
        return {
            "brokers": self.brokers,
            "transaction_max_timeout_ms": self.transaction_max_timeout_ms,
            "topics": {
                t.name: {
                    "replication_factor": t.replication_factor,
                    "min_insync_replicas": t.min_insync_replicas,
                    "unclean_leader_election": t.unclean_leader_election,
                }
                for t in self.topics
            },
        }


def findings(cluster: ClusterDurability, *, transaction_timeout_ms: int | None = None) -> list[str]:
    """What would lose, or refuse, acknowledged records on this cluster; empty when nothing."""
    wanted_rf = min(3, cluster.brokers)
    out = []
    for topic in cluster.topics:
        wanted_isr = min(2, topic.replication_factor)
        if topic.replication_factor < wanted_rf:
            out.append(
                f"topic {topic.name} has replication factor {topic.replication_factor} on a "
                f"{cluster.brokers}-broker cluster: losing one broker loses records it acknowledged "
                f"(recreate it with {wanted_rf} replicas)"
            )
        if topic.min_insync_replicas < wanted_isr:
            out.append(
                f"topic {topic.name} has min.insync.replicas={topic.min_insync_replicas}: acks=all is "
                f"then satisfied by one copy (set it to {wanted_isr})"
            )
        if topic.replication_factor > 1 and topic.min_insync_replicas >= topic.replication_factor:
            out.append(
                f"topic {topic.name} has min.insync.replicas={topic.min_insync_replicas} with "
                f"{topic.replication_factor} replicas: any one broker down refuses every write "
                f"(set it to {topic.replication_factor - 1})"
            )
        if topic.unclean_leader_election:
            out.append(
                f"topic {topic.name} allows unclean leader election: a replica that missed records "
                "may become leader and drop them (set unclean.leader.election.enable=false)"
            )
    limit = cluster.transaction_max_timeout_ms
    if transaction_timeout_ms is not None and limit is not None and transaction_timeout_ms > limit:
        out.append(
            f"TTS_TRANSACTION_TIMEOUT_MS={transaction_timeout_ms} exceeds the brokers' "
            f"transaction.max.timeout.ms={limit}: they refuse to start our transactions"
        )
    return out


def read_cluster(admin: Any, topics: Sequence[str], *, timeout_s: float = 10.0) -> ClusterDurability:
    """Read what `findings` needs with a confluent-kafka AdminClient: one metadata request and
    one DescribeConfigs for the topics and a broker. Topics that do not exist are left out (the
    clients report those on their own)."""
    from confluent_kafka.admin import ConfigResource, ResourceType  # type: ignore[attr-defined]

    metadata = admin.list_topics(timeout=timeout_s)
    present = [name for name in topics if name in metadata.topics and metadata.topics[name].partitions]
    resources = [ConfigResource(ResourceType.TOPIC, name) for name in present]
    broker_ids = sorted(metadata.brokers)
    if broker_ids:
        resources.append(ConfigResource(ResourceType.BROKER, str(broker_ids[0])))
    configs: dict[tuple[Any, str], dict[str, Any]] = {}
    if resources:
        for resource, future in admin.describe_configs(resources, request_timeout=timeout_s).items():
            configs[(resource.restype, resource.name)] = future.result()

    def value(kind: Any, name: str, key: str) -> str | None:
        entry = configs.get((kind, name), {}).get(key)
        return None if entry is None or entry.value is None else str(entry.value)

    durable = []
    for name in present:
        partitions = metadata.topics[name].partitions.values()
        durable.append(
            TopicDurability(
                name=name,
                replication_factor=min(len(p.replicas) for p in partitions),
                min_insync_replicas=int(value(ResourceType.TOPIC, name, "min.insync.replicas") or 1),
                unclean_leader_election=value(ResourceType.TOPIC, name, "unclean.leader.election.enable")
                == "true",
            )
        )
    limit = (
        value(ResourceType.BROKER, str(broker_ids[0]), "transaction.max.timeout.ms") if broker_ids else None
    )
    return ClusterDurability(len(metadata.brokers), tuple(durable), int(limit) if limit else None)
