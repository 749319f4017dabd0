"""Speech-token decoding for many sequences at once, with CosyVoice's own LLM modules.

The official loop (`Qwen2LM.inference`) decodes one sequence: it embeds `sos, prompt text + text,
task id, prompt speech tokens`, runs the Qwen2 backbone with a KV cache one token at a time, and
samples from `llm_decoder`'s log-probabilities until a stop token or `max_len`. This module runs
the same computation for a batch whose membership changes between steps (iteration-level
scheduling): a sequence joins with a prefill of its prefix, and leaves the step it stops.

The batch's KV cache is one `DynamicCache` whose rows are right-aligned: every row writes its next
token into the same column, and a row that joined later (or has a shorter prefix) is padded on
the left. The attention mask hides the padding and each row's position ids count only its own
tokens, so every row computes what it would alone. When rows leave, the cache keeps the others;
columns that only padding uses are cut off.

The backbone is called as `Qwen2Model` (what CosyVoice's `forward_one_step` reads from the
causal-LM wrapper's last hidden state): the wrapper's vocabulary head, whose logits CosyVoice
never reads, is skipped.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from consumer.engines.cosyvoice_batched.sampling import Sampler, SamplingRow, sampler_for

if TYPE_CHECKING:
    import torch

# CosyVoice 3 asserts this id (<|endofprompt|>) is in every LLM input.
END_OF_PROMPT_ID = 151646
MAX_SILENT_RUN = 5  # CosyVoice 3 drops silent/breath tokens beyond a run of five


class PromptError(ValueError):
    """A sequence the LLM cannot take (CosyVoice 3 without <|endofprompt|> in its input)."""


@dataclass(eq=False)
class DecodeSequence:
    """One text segment's speech-token generation."""

    prefix: torch.Tensor  # (1, P, D): sos, prompt text + text, task id, prompt speech tokens
    min_len: int
    max_len: int
    sampling: SamplingRow
    tokens: list[int] = field(default_factory=list)  # what the flow gets (silence runs trimmed)
    silent_run: int = 0

    @property
    def reserved_tokens(self) -> int:
        """KV-cache positions this sequence may need: its prefix and the longest it may grow."""
        return int(self.prefix.shape[1]) + self.max_len


class SpeechDecoder:
    """See the module docstring. Not thread-safe: one scheduler thread drives it."""

    def __init__(
        self,
        llm: Any,
        *,
        device: torch.device,
        fp16: bool,
        silent_tokens: Sequence[int] = (),
    ) -> None:
        self._llm = llm
        self._backbone = llm.llm.model.model  # Qwen2Encoder -> Qwen2ForCausalLM -> Qwen2Model
        self._device = device
        self._fp16 = fp16
        self._sampling: Any = None  # the model's sampling function, as last seen
        self._sampler: Sampler | None = None
        self._silent = frozenset(int(t) for t in silent_tokens)
        self._v3 = type(llm).__name__ == "CosyVoice3LM"
        self._stop_ids = frozenset(int(t) for t in llm.stop_token_ids)
        self._active: list[DecodeSequence] = []
        self._hidden: torch.Tensor | None = None  # (rows, D): what each row samples from next
        self._cache: Any = None
        self._mask: torch.Tensor | None = None  # (rows, columns) 1 = a real token
        self._positions: torch.Tensor | None = None  # (rows,) the next token's position

    # ------------------------------------------------------------------ inputs --

    def sequence(
        self,
        model_input: dict[str, Any],
        sampling: SamplingRow,
        *,
        max_token_text_ratio: float = 20.0,
        min_token_text_ratio: float = 2.0,
    ) -> DecodeSequence:
        """The decoding of one frontend `model_input`, built as `Qwen2LM.inference` builds it.
        Raises PromptError for an input the official call would assert on."""
        import torch

        llm = self._llm
        empty = torch.zeros(1, 0, dtype=torch.int32)
        text = model_input["text"].to(self._device)
        prompt_text = model_input.get("prompt_text", empty).to(self._device)
        prompt_speech = model_input.get("llm_prompt_speech_token", empty).to(self._device)
        text_len = int(text.shape[1])
        joined = torch.concat([prompt_text, text], dim=1)
        if self._v3 and not bool((joined == END_OF_PROMPT_ID).any()):
            raise PromptError("<|endofprompt|> is missing from the CosyVoice 3 text or prompt text")
        with torch.inference_mode(), self._autocast():
            text_emb = llm.llm.model.model.embed_tokens(joined)
            table = llm.speech_embedding if self._v3 else llm.llm_embedding
            sos = table.weight[llm.sos].reshape(1, 1, -1)
            task = table.weight[llm.task_id].reshape(1, 1, -1)
            if prompt_speech.shape[1]:
                speech = llm.speech_embedding(prompt_speech)
            else:
                speech = torch.zeros(1, 0, llm.llm_input_size, dtype=text_emb.dtype, device=self._device)
            prefix = torch.concat([sos, text_emb, task, speech], dim=1)
        return DecodeSequence(
            prefix=prefix,
            min_len=int(text_len * min_token_text_ratio),
            max_len=int(text_len * max_token_text_ratio),
            sampling=sampling,
        )

    # ------------------------------------------------------------------- state --

    @property
    def active(self) -> list[DecodeSequence]:
        return list(self._active)

    def reset(self) -> list[DecodeSequence]:
        """Forget every sequence (after a failed step); returns those that were active."""
        dropped, self._active = self._active, []
        self._hidden = self._cache = self._mask = self._positions = None
        return dropped

    # ------------------------------------------------------------------ decoding --

    def admit(self, sequences: Sequence[DecodeSequence]) -> None:
        """Prefill `sequences` together and add them to the batch; they sample from the next
        `step` on, with the rows already decoding."""
        import torch

        if not sequences:
            return
        with torch.inference_mode():
            self._admit(sequences)

    def _admit(self, sequences: Sequence[DecodeSequence]) -> None:
        import torch
        import torch.nn.functional as F  # noqa: N812

        width = max(int(s.prefix.shape[1]) for s in sequences)
        embeds = torch.concat([F.pad(s.prefix, (0, 0, width - s.prefix.shape[1], 0)) for s in sequences])
        mask = torch.zeros(len(sequences), width, dtype=torch.long, device=self._device)
        for row, s in enumerate(sequences):
            mask[row, width - s.prefix.shape[1] :] = 1
        positions = (mask.cumsum(dim=1) - 1).clamp(min=0)
        from transformers import DynamicCache

        hidden, cache = self._forward(embeds, mask, positions, DynamicCache())  # type: ignore[no-untyped-call]
        self._merge(cache, mask, hidden, mask.sum(dim=1))
        self._active.extend(sequences)

    def step(self) -> list[DecodeSequence]:
        """Sample every active row's next token, advance the continuing rows by one token, and
        return the sequences that finished (a stop token, or `max_len` tokens)."""
        import torch

        if not self._active:
            return []
        with torch.inference_mode():
            return self._step()

    def _step(self) -> list[DecodeSequence]:
        import torch

        assert self._hidden is not None
        assert self._mask is not None
        assert self._positions is not None
        llm = self._llm
        with self._autocast():
            logp = llm.llm_decoder(self._hidden).log_softmax(dim=-1)
        # As the official `sampling_ids`: before min_len, only id speech_token_size is masked.
        early = [row for row, s in enumerate(self._active) if len(s.sampling.history) < s.min_len]
        if early:
            logp[early, llm.speech_token_size] = -float("inf")
        chosen = self._current_sampler().choose(logp, [s.sampling for s in self._active])
        finished: list[DecodeSequence] = []
        keep: list[int] = []
        for row, (sequence, token) in enumerate(zip(self._active, chosen, strict=True)):
            if token in self._stop_ids:
                finished.append(sequence)
                continue
            self._append(sequence, token)
            if len(sequence.sampling.history) >= sequence.max_len:
                finished.append(sequence)
            else:
                keep.append(row)
        if len(keep) != len(self._active):
            self._keep_rows(keep, [chosen[row] for row in keep])
            chosen = [chosen[row] for row in keep]
        if not self._active:
            self.reset()
            return finished
        next_tokens = torch.tensor(chosen, dtype=torch.long, device=self._device)
        embeds = llm.speech_embedding.weight[next_tokens].unsqueeze(1)
        mask = torch.concat([self._mask, torch.ones_like(self._mask[:, :1])], dim=1)
        self._hidden, self._cache = self._forward(embeds, mask, self._positions.unsqueeze(1), self._cache)
        self._mask = mask
        self._positions = self._positions + 1
        return finished

    def _current_sampler(self) -> Sampler:
        """The batched form of the model's sampling function, followed if it is replaced."""
        if self._sampler is None or self._llm.sampling is not self._sampling:
            self._sampling = self._llm.sampling
            self._sampler = sampler_for(self._sampling)
        return self._sampler

    def _append(self, sequence: DecodeSequence, token: int) -> None:
        sequence.sampling.history.append(token)
        # As the official llm_job: a run of more than five silent tokens is not kept.
        if token in self._silent:
            sequence.silent_run += 1
            if sequence.silent_run > MAX_SILENT_RUN:
                return
        else:
            sequence.silent_run = 0
        sequence.tokens.append(token)

    # ----------------------------------------------------------------- the cache --

    def _forward(
        self, embeds: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor, cache: Any
    ) -> tuple[torch.Tensor, Any]:
        import torch

        with torch.inference_mode(), self._autocast():
            out = self._backbone(
                inputs_embeds=embeds,
                attention_mask=mask,
                position_ids=positions,
                past_key_values=cache,
                use_cache=True,
                return_dict=True,
            )
        return out.last_hidden_state[:, -1], out.past_key_values

    def _merge(self, cache: Any, mask: torch.Tensor, hidden: torch.Tensor, lengths: torch.Tensor) -> None:
        """Append rows (right-aligned with the batch) to the batch's cache."""
        import torch
        import torch.nn.functional as F  # noqa: N812

        if self._cache is None or self._mask is None or self._hidden is None or self._positions is None:
            self._cache, self._mask, self._hidden, self._positions = cache, mask, hidden, lengths
            return
        width = max(self._mask.shape[1], mask.shape[1])

        def widen(tensor: torch.Tensor, dim_from_end: int) -> torch.Tensor:
            missing = width - tensor.shape[-dim_from_end]
            if not missing:
                return tensor
            pad = [0, 0] * (dim_from_end - 1) + [missing, 0]
            return F.pad(tensor, pad)

        for layer in range(len(self._cache.key_cache)):
            for store, new in (
                (self._cache.key_cache, cache.key_cache),
                (self._cache.value_cache, cache.value_cache),
            ):
                store[layer] = torch.concat([widen(store[layer], 2), widen(new[layer], 2)])
        self._mask = torch.concat([widen(self._mask, 1), widen(mask, 1)])
        self._hidden = torch.concat([self._hidden, hidden])
        self._positions = torch.concat([self._positions, lengths])

    def _keep_rows(self, rows: list[int], _tokens: list[int]) -> None:
        import torch

        assert self._mask is not None
        assert self._hidden is not None
        assert self._positions is not None
        self._active = [self._active[row] for row in rows]
        if not rows:
            return
        index = torch.tensor(rows, dtype=torch.long, device=self._device)
        mask = self._mask.index_select(0, index)
        used = mask.any(dim=0).nonzero()
        start = int(used[0]) if len(used) else 0  # columns only the departed rows used
        self._mask = mask[:, start:]
        for store in (self._cache.key_cache, self._cache.value_cache):
            for layer in range(len(store)):
                store[layer] = store[layer].index_select(0, index)[:, :, start:]
        self._hidden = self._hidden.index_select(0, index)
        self._positions = self._positions.index_select(0, index)

    @contextlib.contextmanager
    def _autocast(self) -> Iterator[None]:
        import torch

        if self._fp16 and self._device.type == "cuda":
            with torch.autocast("cuda", dtype=torch.float16):
                yield
        else:
            yield
