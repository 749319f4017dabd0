"""One way to reach Redis for every part that uses it: a single server, a Sentinel-managed
master, or a Redis Cluster, through redis-py's own clients (`Sentinel.master_for`,
`RedisCluster`), synchronous for the worker and the operator tools, asynchronous for the gateway.

The topology comes from the settings every part already reads:

* `TTS_REDIS_URL` keeps the connection options in every mode: TLS (`rediss://`, `ssl_*` query
  parameters), user and password, and the database (a single server or a Sentinel master;
  Redis Cluster has only database 0);
* `TTS_REDIS_SENTINELS` (host:port list) with `TTS_REDIS_SENTINEL_MASTER` makes it a Sentinel
  deployment: the client asks the sentinels where the master is and asks again after a failover;
  `TTS_REDIS_SENTINEL_PASSWORD` when the sentinels themselves want one;
* `TTS_REDIS_CLUSTER_NODES` (host:port list, any few nodes) makes it a Redis Cluster: the client
  learns the slot map from them and follows MOVED/ASK redirections and failovers.

Setting both lists is a configuration error. Secrets never appear in `describe()`.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

if TYPE_CHECKING:
    import redis
    import redis.asyncio

    from consumer.settings import WorkerSettings


class RedisMode(enum.StrEnum):
    SINGLE = "single"
    SENTINEL = "sentinel"
    CLUSTER = "cluster"


def parse_addresses(entries: Sequence[str], what: str) -> tuple[tuple[str, int], ...]:
    """`["host:port", ...]` into pairs; a clear error for anything else."""
    out = []
    for entry in entries:
        host, sep, port = entry.strip().rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"{what}: {entry!r} is not host:port")
        out.append((host.strip("[]"), int(port)))
    return tuple(out)


@dataclass(frozen=True)
class RedisTopology:
    url: str
    password: str | None = None
    sentinels: tuple[tuple[str, int], ...] = ()
    sentinel_master: str = "mymaster"
    sentinel_password: str | None = None
    cluster_nodes: tuple[tuple[str, int], ...] = ()
    # Extra keyword arguments for every connection (timeouts, health checks).
    options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.sentinels and self.cluster_nodes:
            raise ValueError("set TTS_REDIS_SENTINELS or TTS_REDIS_CLUSTER_NODES, not both")

    @property
    def mode(self) -> RedisMode:
        if self.sentinels:
            return RedisMode.SENTINEL
        if self.cluster_nodes:
            return RedisMode.CLUSTER
        return RedisMode.SINGLE

    def describe(self) -> str:
        """Where Redis is, without credentials (for log lines and errors)."""
        if self.mode is RedisMode.SENTINEL:
            nodes = ",".join(f"{h}:{p}" for h, p in self.sentinels)
            return f"sentinel master {self.sentinel_master!r} via {nodes}"
        if self.mode is RedisMode.CLUSTER:
            return "cluster via " + ",".join(f"{h}:{p}" for h, p in self.cluster_nodes)
        parts = urlsplit(self.url)
        return f"{parts.scheme}://{parts.hostname}:{parts.port or 6379}{parts.path}"

    def _connection_kwargs(self) -> dict[str, Any]:
        """Options from the URL (TLS, credentials, database) that apply to every node."""
        from redis.connection import parse_url

        kwargs: dict[str, Any] = dict(parse_url(self.url))  # type: ignore[no-untyped-call]
        for key in ("host", "port", "path", "connection_class"):
            kwargs.pop(key, None)
        if urlsplit(self.url).scheme == "rediss":
            kwargs["ssl"] = True
        if self.password is not None:
            kwargs["password"] = self.password
        return {**kwargs, **self.options}

    # ------------------------------------------------------------------------------ clients

    def client(self) -> redis.Redis | redis.RedisCluster:
        """A synchronous client for this topology."""
        import redis
        from redis.cluster import ClusterNode, RedisCluster
        from redis.sentinel import Sentinel

        if self.mode is RedisMode.SINGLE:
            options: dict[str, Any] = {**self.options}
            if self.password:
                options["password"] = self.password
            return redis.Redis.from_url(self.url, **options)
        kwargs = self._connection_kwargs()
        if self.mode is RedisMode.SENTINEL:
            sentinel = Sentinel(list(self.sentinels), sentinel_kwargs=self._sentinel_kwargs(kwargs), **kwargs)
            master: redis.Redis = sentinel.master_for(self.sentinel_master)
            return master
        kwargs.pop("db", None)
        nodes = [ClusterNode(host, port) for host, port in self.cluster_nodes]  # type: ignore[no-untyped-call]
        return RedisCluster(startup_nodes=nodes, **kwargs)

    def async_client(self) -> redis.asyncio.Redis | redis.asyncio.RedisCluster:
        """An asyncio client for this topology (the gateway)."""
        import redis.asyncio
        from redis.asyncio.cluster import ClusterNode, RedisCluster
        from redis.asyncio.sentinel import Sentinel

        if self.mode is RedisMode.SINGLE:
            options: dict[str, Any] = {**self.options}
            if self.password:
                options["password"] = self.password
            return redis.asyncio.Redis.from_url(self.url, **options)
        kwargs = self._connection_kwargs()
        if self.mode is RedisMode.SENTINEL:
            sentinel = Sentinel(list(self.sentinels), sentinel_kwargs=self._sentinel_kwargs(kwargs), **kwargs)
            master: redis.asyncio.Redis = sentinel.master_for(self.sentinel_master)
            return master
        kwargs.pop("db", None)
        kwargs.pop("health_check_interval", None)  # not an option of the asyncio cluster client
        nodes = [ClusterNode(host, port) for host, port in self.cluster_nodes]
        return RedisCluster(startup_nodes=nodes, **kwargs)

    def _sentinel_kwargs(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        """Sentinels are reached like the data nodes (TLS, timeouts) but have their own password."""
        keep = {k: v for k, v in kwargs.items() if k.startswith(("ssl", "socket_"))}
        if self.sentinel_password is not None:
            keep["password"] = self.sentinel_password
        return keep


def redis_topology(settings: WorkerSettings, **options: Any) -> RedisTopology:
    """The topology the `TTS_REDIS_*` settings describe; `options` go to every connection."""
    secret = settings.redis_sentinel_password
    return RedisTopology(
        url=settings.redis_url.get_secret_value(),
        password=settings.redis_password.get_secret_value() if settings.redis_password else None,
        sentinels=parse_addresses(settings.redis_sentinels, "TTS_REDIS_SENTINELS"),
        sentinel_master=settings.redis_sentinel_master,
        sentinel_password=secret.get_secret_value() if secret else None,
        cluster_nodes=parse_addresses(settings.redis_cluster_nodes, "TTS_REDIS_CLUSTER_NODES"),
        options=dict(options),
    )
