"""Create the local stack's buckets through the S3 API (idempotent)."""

import os
import sys

import boto3
from botocore.exceptions import ClientError


def main() -> int:
    s3 = boto3.client(
        "s3",
        endpoint_url=os.environ["TTS_S3_ENDPOINT_URL"],
        aws_access_key_id=os.environ["TTS_S3_ACCESS_KEY_ID"],
        aws_secret_access_key=os.environ["TTS_S3_SECRET_ACCESS_KEY"],
        region_name="us-east-1",
    )
    for bucket in sys.argv[1:]:
        try:
            s3.create_bucket(Bucket=bucket)
        except ClientError as exc:
            if exc.response["Error"]["Code"] not in (
                "BucketAlreadyOwnedByYou",
                "BucketAlreadyExists",
            ):
                raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
