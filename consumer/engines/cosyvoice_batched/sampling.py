"""How the batched decoder picks each sequence's next speech token.

CosyVoice's LLM samples with `ras_sampling` (repetition-aware sampling: nucleus sampling over
the top-p/top-k tokens, and a draw from the whole distribution instead when the nucleus pick
already occurs in the last `win_size` tokens). The official code runs it per token on a
(vocabulary,) tensor and draws from torch's global random generator, so a request's audio depends
on whatever ran before it in the process.

Here the same rule runs on the whole batch at once, and each sequence draws its uniforms from a
generator of its own, seeded from the request: a request gets the same tokens whether it runs
alone or among 63 others, and whichever step it joined at. The draws are inverse-CDF picks, so
one uniform per decision and no per-row kernel launches.

A model whose yaml names another sampling function gets that function, called row by row with
the same arguments as the official loop (tests install a greedy one on both paths to compare
them token for token).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

if TYPE_CHECKING:
    import torch

# Sequences whose history is shorter than the repetition window are padded with this id,
# which no token equals.
_NO_TOKEN = -1


@dataclass
class SamplingRow:
    """What a sampler needs to know about one sequence."""

    history: list[int]  # every token generated so far (the repetition window reads it)
    rng: np.random.Generator


class Sampler(Protocol):
    def choose(self, logp: torch.Tensor, rows: Sequence[SamplingRow]) -> list[int]:
        """One token per row of `logp` ((rows, vocabulary) log-probabilities, already masked)."""


@dataclass(frozen=True, slots=True)
class RasParameters:
    top_p: float = 0.8
    top_k: int = 25
    win_size: int = 10
    tau_r: float = 0.1


class BatchedRasSampler:
    """`ras_sampling` for a batch: see the module docstring."""

    def __init__(self, parameters: RasParameters) -> None:
        self._p = parameters

    def choose(self, logp: torch.Tensor, rows: Sequence[SamplingRow]) -> list[int]:
        import torch

        p = self._p
        count = len(rows)
        uniforms = np.stack([row.rng.random(2) for row in rows]).astype(np.float64)
        draws = torch.from_numpy(uniforms).to(logp.device)
        probs = logp.float().softmax(dim=-1)
        # Nucleus: the highest-probability tokens while the mass before them is under top_p,
        # at most top_k of them (the first always), drawn in proportion to their probability.
        top_probs, top_ids = probs.topk(min(p.top_k, probs.shape[-1]), dim=-1)
        mass_before = top_probs.cumsum(dim=-1) - top_probs
        weights = torch.where(mass_before < p.top_p, top_probs, torch.zeros_like(top_probs))
        picked = top_ids.gather(1, _inverse_cdf(weights, draws[:, 0]).unsqueeze(1)).squeeze(1)
        # Repetition-aware: a pick already repeated in the window is replaced by a draw from the
        # whole distribution without it.
        window = torch.full((count, p.win_size), _NO_TOKEN, dtype=torch.long)
        for index, row in enumerate(rows):
            recent = row.history[-p.win_size :]
            if recent:
                window[index, -len(recent) :] = torch.tensor(recent, dtype=torch.long)
        repeats = (window.to(logp.device) == picked.unsqueeze(1)).sum(dim=1)
        redraw = repeats >= p.win_size * p.tau_r
        if bool(redraw.any()):
            rows_to_redraw = redraw.nonzero().squeeze(1)
            masked = probs[rows_to_redraw].clone()
            masked.scatter_(1, picked[rows_to_redraw].unsqueeze(1), 0.0)
            fresh = _inverse_cdf(masked, draws[rows_to_redraw, 1])
            picked = picked.clone()
            picked[rows_to_redraw] = fresh
        return [int(token) for token in picked.tolist()]


def _inverse_cdf(weights: torch.Tensor, uniforms: torch.Tensor) -> torch.Tensor:
    """Per row, the index i whose cumulative weight first exceeds u * total (unnormalised
    weights, as torch.multinomial takes them)."""
    import torch

    cumulative = weights.double().cumsum(dim=-1)
    targets = (uniforms.double() * cumulative[:, -1]).unsqueeze(1)
    index = torch.searchsorted(cumulative, targets, right=True).squeeze(1)
    # u * total can round up to total: never land on a zero-weight tail.
    last_positive = weights.shape[-1] - 1 - (weights.flip(-1) > 0).int().argmax(dim=-1)
    return torch.minimum(index, last_positive)


class LibrarySampler:
    """The yaml's own sampling function, called per row exactly as the official loop calls it
    (`sampling(weighted_scores, decoded_tokens, sampling=25)`), on torch's global generator."""

    def __init__(self, function: Callable[..., Any], top_k: int = 25) -> None:
        self._function = function
        self._top_k = top_k

    def choose(self, logp: torch.Tensor, rows: Sequence[SamplingRow]) -> list[int]:
        return [int(self._function(logp[index], row.history, self._top_k)) for index, row in enumerate(rows)]


def sampler_for(function: Callable[..., Any]) -> Sampler:
    """The batched form of the model's sampling function when it is CosyVoice's `ras_sampling`
    (the released yamls all use it), else that function row by row."""
    target = function.func if isinstance(function, functools.partial) else function
    if getattr(target, "__name__", "") == "ras_sampling" and getattr(target, "__module__", "") == (
        "cosyvoice.utils.common"
    ):
        keywords = function.keywords if isinstance(function, functools.partial) else {}
        known = {k: v for k, v in keywords.items() if k in RasParameters.__dataclass_fields__}
        return BatchedRasSampler(RasParameters(**known))
    return LibrarySampler(function)


def request_rng(seed: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(seed))
