"""An in-memory ObjectStore for unit tests: same errors as the S3 adapter, counts its reads,
and can be told to be down."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Mapping, Sequence

from consumer.errors import ObjectNotFound, ObjectTooLarge, StorageUnavailable
from consumer.ports import ObjectInfo, PutObject


class MemoryObjectStore:
    def __init__(self) -> None:
        self.objects: dict[tuple[str, str], tuple[bytes, str, dict[str, str]]] = {}
        self.gets: Counter[str] = Counter()
        self.down = False

    def _check(self) -> None:
        if self.down:
            raise StorageUnavailable("memory store is down")

    def put(
        self,
        bucket: str,
        key: str,
        data: bytes,
        *,
        content_type: str,
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        self._check()
        self.objects[(bucket, key)] = (bytes(data), content_type, dict(metadata or {}))

    def put_many(self, bucket: str, objects: Sequence[PutObject]) -> list[Exception | None]:
        errors: list[Exception | None] = []
        for item in objects:
            try:
                self.put(bucket, item.key, item.data, content_type=item.content_type, metadata=item.metadata)
                errors.append(None)
            except StorageUnavailable as exc:
                errors.append(exc)
        return errors

    def get(self, bucket: str, key: str, *, max_bytes: int | None = None) -> bytes:
        self._check()
        self.gets[key] += 1
        if (bucket, key) not in self.objects:
            raise ObjectNotFound(f"s3://{bucket}/{key}")
        data = self.objects[(bucket, key)][0]
        if max_bytes is not None and len(data) > max_bytes:
            raise ObjectTooLarge(f"s3://{bucket}/{key} is {len(data)} bytes")
        return data

    def head(self, bucket: str, key: str) -> ObjectInfo | None:
        self._check()
        entry = self.objects.get((bucket, key))
        return None if entry is None else ObjectInfo(len(entry[0]))

    def delete(self, bucket: str, key: str) -> None:
        self._check()
        self.objects.pop((bucket, key), None)

    def list_keys(self, bucket: str, prefix: str) -> Iterator[str]:
        self._check()
        return iter(sorted(k for b, k in self.objects if b == bucket and k.startswith(prefix)))

    def presign_get(self, bucket: str, key: str, expires_s: int) -> str:
        return f"https://example.invalid/{bucket}/{key}?expires={expires_s}"
