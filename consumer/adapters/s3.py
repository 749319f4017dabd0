"""ObjectStore on boto3 (any S3-compatible server)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from consumer.errors import ObjectNotFound, ObjectTooLarge, StorageAccessDenied, StorageUnavailable
from consumer.ports import ObjectInfo

if TYPE_CHECKING:
    from types_boto3_s3 import S3Client

    from consumer.settings import WorkerSettings

log = logging.getLogger(__name__)
T = TypeVar("T")
_NOT_FOUND = {"404", "NoSuchKey", "NotFound", "NoSuchBucket"}
_DENIED = {"403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "AllAccessDisabled"}


class S3ObjectStore:
    def __init__(
        self,
        *,
        endpoint_url: str | None,
        region: str,
        access_key_id: str | None,
        secret_access_key: str | None,
        max_pool_connections: int = 32,
        timeout_s: float = 10.0,
    ) -> None:
        # Credentials left as None fall through to boto3's chain: pod identity (IRSA, workload
        # identity), the environment, config files. Retries are ours, not boto's: the loop
        # decides when storage is "down" and pauses, so keep boto's own attempts short.
        self._client: S3Client = boto3.client(
            "s3",
            endpoint_url=endpoint_url,
            region_name=region,
            aws_access_key_id=access_key_id,
            aws_secret_access_key=secret_access_key,
            config=Config(
                s3={"addressing_style": "path"},
                retries={"max_attempts": 2, "mode": "standard"},
                # Integrity comes from our own sha256 in the key; a CRC32 per PUT only costs CPU.
                request_checksum_calculation="when_required",
                response_checksum_validation="when_required",
                connect_timeout=timeout_s,
                read_timeout=timeout_s,
                max_pool_connections=max_pool_connections,
            ),
        )

    @classmethod
    def from_settings(cls, settings: WorkerSettings) -> S3ObjectStore:
        key_id, secret = settings.s3_access_key_id, settings.s3_secret_access_key
        return cls(
            endpoint_url=settings.s3_endpoint_url,
            region=settings.s3_region,
            access_key_id=key_id.get_secret_value() if key_id else None,
            secret_access_key=secret.get_secret_value() if secret else None,
        )

    def _call(self, what: str, fn: Callable[[], T]) -> T:
        """The one place boto errors become ours."""
        try:
            return fn()
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in _NOT_FOUND:
                raise ObjectNotFound(f"{what}: not found") from exc
            if code in _DENIED:
                raise StorageAccessDenied(
                    f"{what}: {code} (check the S3 credentials and bucket policy)"
                ) from exc
            status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
            if status >= 500 or code in ("SlowDown", "RequestTimeout", "ServiceUnavailable"):
                raise StorageUnavailable(f"{what}: {code or status}") from exc
            raise StorageUnavailable(f"{what}: refused ({code or status})") from exc
        except BotoCoreError as exc:
            raise StorageUnavailable(f"{what}: {exc}") from exc

    def put(
        self,
        bucket: str,
        key: str,
        data: bytes,
        *,
        content_type: str,
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        self._call(
            f"put s3://{bucket}/{key}",
            lambda: self._client.put_object(
                Bucket=bucket, Key=key, Body=data, ContentType=content_type, Metadata=dict(metadata or {})
            ),
        )

    def get(self, bucket: str, key: str, *, max_bytes: int | None = None) -> bytes:
        what = f"get s3://{bucket}/{key}"
        if max_bytes is not None:
            info = self.head(bucket, key)
            if info is None:
                raise ObjectNotFound(f"{what}: not found")
            if info.size_bytes > max_bytes:
                raise ObjectTooLarge(f"{what}: {info.size_bytes} bytes exceeds the limit of {max_bytes}")
        response: Any = self._call(what, lambda: self._client.get_object(Bucket=bucket, Key=key))
        body = response["Body"]
        try:
            # Read at most one byte past the limit so a file that grew since HEAD is caught too.
            data: bytes = body.read() if max_bytes is None else body.read(max_bytes + 1)
        except BotoCoreError as exc:
            raise StorageUnavailable(f"{what}: {exc}") from exc
        finally:
            body.close()
        if max_bytes is not None and len(data) > max_bytes:
            raise ObjectTooLarge(f"{what}: larger than the limit of {max_bytes} bytes")
        return data

    def head(self, bucket: str, key: str) -> ObjectInfo | None:
        try:
            response: Any = self._call(
                f"head s3://{bucket}/{key}", lambda: self._client.head_object(Bucket=bucket, Key=key)
            )
        except ObjectNotFound:
            return None
        return ObjectInfo(
            size_bytes=int(response["ContentLength"]),
            content_type=str(response.get("ContentType", "")),
            metadata=dict(response.get("Metadata", {})),
        )

    def delete(self, bucket: str, key: str) -> None:
        self._call(f"delete s3://{bucket}/{key}", lambda: self._client.delete_object(Bucket=bucket, Key=key))

    def list_keys(self, bucket: str, prefix: str) -> Iterator[str]:
        paginator = self._client.get_paginator("list_objects_v2")
        pages: Any = self._call(
            f"list s3://{bucket}/{prefix}", lambda: list(paginator.paginate(Bucket=bucket, Prefix=prefix))
        )
        for page in pages:
            for item in page.get("Contents", []):
                yield str(item["Key"])

    def presign_get(self, bucket: str, key: str, expires_s: int) -> str:
        url: str = self._call(
            f"presign s3://{bucket}/{key}",
            lambda: self._client.generate_presigned_url(
                "get_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=expires_s
            ),
        )
        return url
