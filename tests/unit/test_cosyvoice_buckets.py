"""How the batched vocoder cuts a batch: buckets of similar length, never more than a quarter of
padding, each item exactly once."""

from __future__ import annotations

import torch

from consumer.engines.cosyvoice_batched.vocoder import PADDING_WASTE, VocodeItem, length_buckets


def item(tokens: int) -> VocodeItem:
    return VocodeItem(
        tokens=list(range(tokens)),
        prompt_token=torch.zeros(1, 50, dtype=torch.int32),
        prompt_feat=torch.zeros(1, 100, 80),
        embedding=torch.zeros(1, 192),
        speed=1.0,
        seed=0,
    )


def test_similar_lengths_share_a_bucket_and_outliers_get_their_own() -> None:
    lengths = [100, 30, 105, 400, 98, 35]
    buckets = length_buckets(list(enumerate(item(n) for n in lengths)))
    assert [[index for index, _ in bucket] for bucket in buckets] == [[1, 5], [4, 0, 2], [3]]


def test_no_bucket_carries_more_than_the_allowed_padding() -> None:
    lengths = [5, 17, 29, 41, 53, 65, 77, 89, 101, 113, 300, 301, 302]
    buckets = length_buckets(list(enumerate(item(n) for n in lengths)))
    assert sorted(index for bucket in buckets for index, _ in bucket) == list(range(len(lengths)))
    for bucket in buckets:
        frames = [entry.frames for _, entry in bucket]
        assert max(frames) * len(frames) <= (1 + PADDING_WASTE) * sum(frames)
    assert len(buckets[-1]) == 3, "equal lengths batch together"
