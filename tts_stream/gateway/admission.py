"""Per-key rate limits and the record of accepted requests, in Redis, one round trip each.

Rate limits are GCRA (the generic cell rate algorithm): one timestamp per key, the "theoretical
arrival time", advanced by 1/rate per request; a request is refused while it would be more than
`burst` requests ahead. It needs no timer and no list, and Redis's clock is the only clock, so
any number of gateway replicas share one limit per key exactly.

The same script records the accepted request under the key's name (`tts:gw:{name}:req:<id>`),
so `GET /v1/tts/{id}` finds only the caller's own requests: another key's id is simply not
there (404), and nothing says whether it exists. The braces are a Redis Cluster hash tag: both
keys of one API key live in one slot, as a script's keys must.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from redis.asyncio import Redis, RedisCluster

# KEYS[1] the key's rate timestamp; KEYS[2] the request record (or none).
# ARGV[1] microseconds per request (1/rate); ARGV[2] burst tolerance in microseconds;
# ARGV[3] the record's value; ARGV[4] its TTL in seconds.
# Returns {1, 0} when admitted, {0, microseconds until it would be}.
_ADMIT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local tat = tonumber(redis.call('GET', KEYS[1])) or now
if tat < now then tat = now end
local new_tat = tat + interval
local wait = new_tat - tonumber(ARGV[2]) - now
if wait > 0 then return {0, wait} end
redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', math.ceil((new_tat - now) / 1000) + 1)
if #KEYS > 1 then redis.call('SET', KEYS[2], ARGV[3], 'EX', ARGV[4]) end
return {1, 0}
"""


class AdmissionUnavailable(Exception):
    """Redis did not answer; the caller decides whether to go on without it."""


@dataclass(frozen=True, slots=True)
class RequestRecord:
    created_at_ms: int
    deadline_ms: int | None

    def to_json(self) -> bytes:
        return json.dumps({"created_at_ms": self.created_at_ms, "deadline_ms": self.deadline_ms}).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> RequestRecord:
        body = json.loads(raw)
        return cls(int(body["created_at_ms"]), body.get("deadline_ms"))


def _rate_key(name: str) -> str:
    return f"tts:gw:{{{name}}}:rate"


def _record_key(name: str, request_id: str) -> str:
    return f"tts:gw:{{{name}}}:req:{request_id}"


class Admission:
    def __init__(self, client: Redis | RedisCluster, *, record_ttl_s: int) -> None:
        self._redis = client
        self._record_ttl_s = record_ttl_s
        self._admit: Any = client.register_script(_ADMIT)

    async def admit(
        self,
        name: str,
        rate_per_s: float,
        burst: int,
        record: tuple[str, RequestRecord] | None = None,
    ) -> float | None:
        """None when admitted (and the record written), else the seconds until a retry can be."""
        from redis.exceptions import RedisError

        interval_us = 1_000_000 / rate_per_s
        keys = [_rate_key(name)]
        args: list[Any] = [f"{interval_us:.0f}", f"{interval_us * burst:.0f}"]
        if record is not None:
            request_id, value = record
            keys.append(_record_key(name, request_id))
            args += [value.to_json(), self._record_ttl_s]
        try:
            admitted, wait_us = await self._admit(keys=keys, args=args)
        except (RedisError, OSError) as exc:
            raise AdmissionUnavailable(str(exc)) from exc
        return None if admitted else int(wait_us) / 1_000_000

    async def record_of(self, name: str, request_id: str) -> RequestRecord | None:
        from redis.exceptions import RedisError

        try:
            raw = await self._redis.get(_record_key(name, request_id))
        except (RedisError, OSError) as exc:
            raise AdmissionUnavailable(str(exc)) from exc
        return None if raw is None else RequestRecord.from_json(raw.encode() if isinstance(raw, str) else raw)

    async def ping(self) -> bool:
        from redis.exceptions import RedisError

        try:
            return bool(await self._redis.ping())
        except (RedisError, OSError):
            return False
