"""The batched form of CosyVoice's repetition-aware sampling against the library's own
`ras_sampling`: the same distribution over tokens, drawn per sequence from its own generator."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch
from cosyvoice.utils.common import ras_sampling

from consumer.engines.cosyvoice_batched.sampling import (
    BatchedRasSampler,
    LibrarySampler,
    RasParameters,
    SamplingRow,
    request_rng,
    sampler_for,
)

VOCABULARY = 40
DRAWS = 4000


def scores() -> torch.Tensor:
    """Log-probabilities with a head of likely tokens and a long tail, as a decoder's are."""
    logits = torch.linspace(3.0, -3.0, VOCABULARY) + 0.3 * torch.sin(
        torch.arange(VOCABULARY, dtype=torch.float)
    )
    return logits.log_softmax(dim=-1)


def counts(picks: list[int]) -> np.ndarray:
    return np.bincount(picks, minlength=VOCABULARY)


def library_picks(history: list[int]) -> list[int]:
    torch.manual_seed(1)
    return [int(ras_sampling(scores().clone(), history, 25)) for _ in range(DRAWS)]


def batched_picks(history: list[int]) -> list[int]:
    rows = [SamplingRow(history=list(history), rng=request_rng(seed)) for seed in range(DRAWS)]
    return BatchedRasSampler(RasParameters()).choose(scores().expand(DRAWS, -1).clone(), rows)


@pytest.mark.parametrize(
    "history",
    [
        pytest.param([], id="nucleus"),
        pytest.param([7, 9, 11, 0, 1, 2], id="repetition-fallback"),  # the likeliest tokens already said
    ],
)
def test_the_batched_draws_follow_the_librarys_distribution(history: list[int]) -> None:
    """A chi-square test of homogeneity on the two samples' counts (both seeded, so the
    verdict is the same every run): a p-value this high says nothing tells them apart."""
    from scipy.stats import chi2_contingency

    ours, theirs = counts(batched_picks(history)), counts(library_picks(history))
    seen = (ours + theirs) > 0
    p_value = chi2_contingency(np.stack([ours[seen], theirs[seen]])).pvalue
    assert p_value > 0.01, f"the distributions differ (p = {p_value:.2g})"
    if not history:
        nucleus = set(np.nonzero(theirs)[0])
        assert set(np.nonzero(ours)[0]) <= nucleus, "never outside the top-p / top-k nucleus"


def test_a_repeated_pick_is_replaced_by_another_token() -> None:
    peaked = torch.full((1, VOCABULARY), -20.0)
    peaked[0, 5] = 0.0  # token 5 is all but certain
    logp = peaked.log_softmax(dim=-1)
    sampler = BatchedRasSampler(RasParameters())
    fresh = sampler.choose(logp.clone(), [SamplingRow(history=[], rng=request_rng(0))])
    repeated = sampler.choose(logp.clone(), [SamplingRow(history=[3, 5], rng=request_rng(0))])
    assert fresh == [5]
    assert repeated != [5], "5 is in the window: drawn again from the rest"


def test_each_row_draws_from_its_own_generator() -> None:
    """A row's pick depends on its seed and history only, not on the rows beside it."""
    sampler = BatchedRasSampler(RasParameters())
    alone = sampler.choose(scores().unsqueeze(0).clone(), [SamplingRow([], request_rng(42))])
    crowd_rows = [SamplingRow([], request_rng(seed)) for seed in (7, 42, 9)]
    crowd = sampler.choose(scores().expand(3, -1).clone(), crowd_rows)
    assert crowd[1] == alone[0]


def test_the_yamls_ras_sampling_is_recognised_with_its_parameters() -> None:
    configured = functools.partial(ras_sampling, top_p=0.7, top_k=10, win_size=5, tau_r=0.2)
    sampler = sampler_for(configured)
    assert isinstance(sampler, BatchedRasSampler)
    assert sampler._p == RasParameters(top_p=0.7, top_k=10, win_size=5, tau_r=0.2)

    def greedy(weighted_scores: torch.Tensor, decoded_tokens: list[int], sampling: int) -> int:
        return int(weighted_scores.argmax())

    assert isinstance(sampler_for(greedy), LibrarySampler), "another function runs row by row"
