"""Prompt-audio URIs: only allow-listed s3:// prefixes, no path tricks (no SSRF)."""

from __future__ import annotations

import pytest

from consumer.errors import ConfigurationError
from consumer.voices.allowlist import PromptAllowList, parse_entry
from consumer.voices.errors import VoiceNotAllowed
from schemas.model import ErrorCode

ALLOW = PromptAllowList(["prompts-bucket/tenants/", "shared-voices/"])


@pytest.mark.parametrize(
    ("uri", "bucket", "key"),
    [
        ("s3://prompts-bucket/tenants/acme/alice.wav", "prompts-bucket", "tenants/acme/alice.wav"),
        ("s3://shared-voices/any/depth/ok.flac", "shared-voices", "any/depth/ok.flac"),
        ("s3://shared-voices/名前.wav", "shared-voices", "名前.wav"),
        ("s3://prompts-bucket/tenants/a..b.wav", "prompts-bucket", "tenants/a..b.wav"),
    ],
)
def test_allowed(uri: str, bucket: str, key: str) -> None:
    assert ALLOW.check(uri) == (bucket, key)


@pytest.mark.parametrize(
    "uri",
    [
        "http://169.254.169.254/latest/meta-data/iam/security-credentials/",
        "https://prompts-bucket.s3.amazonaws.com/tenants/x.wav",
        "file:///etc/passwd",
        "S3://prompts-bucket/tenants/x.wav",
        "s3:/prompts-bucket/tenants/x.wav",
        "s3://other-bucket/tenants/x.wav",
        "s3://prompts-bucket/private/x.wav",
        "s3://prompts-bucket/tenants-private/x.wav",
        "s3://prompts-bucket/tenants/../private/x.wav",
        "s3://prompts-bucket/tenants/./x.wav",
        "s3://prompts-bucket/tenants//x.wav",
        "s3://prompts-bucket//tenants/x.wav",
        "s3://prompts-bucket/tenants/%2e%2e/private/x.wav",
        "s3://prompts-bucket/tenants/..%2fprivate/x.wav",
        "s3://prompts-bucket/tenants\\..\\private\\x.wav",
        "s3://prompts-bucket/tenants/x.wav?versionId=1",
        "s3://prompts-bucket/tenants/x.wav#frag",
        "s3://prompts-bucket/tenants/x\x00.wav",
        "s3://prompts-bucket/tenants/",
        "s3://prompts-bucket",
        "s3://169.254.169.254/tenants/x.wav",
        "s3://user:pass@prompts-bucket/tenants/x.wav",
        "s3://prompts-bucket/tenants/" + "a" * 1100,
    ],
)
def test_refused(uri: str) -> None:
    with pytest.raises(VoiceNotAllowed) as caught:
        ALLOW.check(uri)
    assert caught.value.code is ErrorCode.VOICE_NOT_ALLOWED


def test_an_empty_allow_list_refuses_everything() -> None:
    with pytest.raises(VoiceNotAllowed, match="not enabled"):
        PromptAllowList([]).check("s3://prompts-bucket/tenants/x.wav")


def test_entries_without_a_trailing_slash_mean_the_folder() -> None:
    allow = PromptAllowList(["prompts-bucket/tenants"])
    assert allow.check("s3://prompts-bucket/tenants/x.wav")
    with pytest.raises(VoiceNotAllowed):
        allow.check("s3://prompts-bucket/tenants-secret/x.wav")


@pytest.mark.parametrize(
    "entry", ["no-slash", "Bad_Bucket/x/", "bucket/../x/", "bucket/a//b/", "bucket/%2e/"]
)
def test_bad_entries_are_configuration_errors(entry: str) -> None:
    with pytest.raises(ConfigurationError):
        parse_entry(entry)
