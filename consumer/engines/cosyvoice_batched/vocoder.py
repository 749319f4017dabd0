"""Speech tokens to audio for many sequences at once: CosyVoice's flow matching and HiFT vocoder
with padding and masks.

The official `token2wav` runs one sequence (the flow model asserts a batch of one, and its Euler
solver sizes its buffers for exactly one conditional and one unconditional row). Here the same
modules run on a padded batch:

* flow: prompt tokens + generated tokens, right-padded, embedded and masked as the flow's own
  `inference` does; the prompt mel as the condition; the classifier-free-guidance Euler solver
  over 2 x batch rows (conditional rows, then unconditional ones) calling the flow's estimator.
  Everything that mixes time steps is causal, masked, or looks ahead only into zeros that match
  the official zero padding, so each row's mel is what it would be alone (to float rounding).
  The flow's fixed noise is a prefix of one buffer, so a padded row reads the same noise.
* HiFT: CosyVoice 3's causal vocoder takes the padded mel batch (its sources of noise are fixed
  buffers too); each row is cut to its own length. CosyVoice 2's vocoder is not causal and draws
  fresh noise from torch's generator, so it runs one sequence at a time, with the generator
  seeded from the request: its audio is reproducible, which the official path's is not.
* A batch is cut into buckets of similar length (at most PADDING_WASTE of padding each): the
  estimator computes a padded frame like a real one, ten times over.
* A TensorRT flow estimator is built for batches of two rows: with one, the flow runs per
  sequence (the LLM stage still batches).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch

N_TIMESTEPS = 10  # the official token2wav's flow-matching steps
PADDING_WASTE = 0.25  # the most padding a flow batch may carry, as a share of its real frames


@dataclass(frozen=True, slots=True)
class VocodeItem:
    tokens: Sequence[int]
    prompt_token: torch.Tensor  # (1, Pt)
    prompt_feat: torch.Tensor  # (1, Pf, 80)
    embedding: torch.Tensor  # (1, 192)
    speed: float
    seed: int

    @property
    def frames(self) -> int:
        """Mel frames this item puts through the flow (prompt included)."""
        return 2 * (int(self.prompt_token.shape[1]) + len(self.tokens))


class Token2Wav:
    """See the module docstring. `model` is the loaded CosyVoice2Model / CosyVoice3Model."""

    def __init__(self, model: Any, *, device: torch.device) -> None:
        import torch

        self._flow = model.flow
        self._hift = model.hift
        self._fp16 = bool(model.fp16)
        self._device = device
        self._v3 = type(model.flow).__name__ == "CausalMaskedDiffWithDiT"
        self._batched_estimator = isinstance(self._flow.decoder.estimator, torch.nn.Module)

    def run(self, items: Sequence[VocodeItem]) -> list[np.ndarray]:
        """Float32 samples per item, in order (none for an item without tokens)."""

        audio: dict[int, np.ndarray] = {}
        for bucket in length_buckets([(i, item) for i, item in enumerate(items) if item.tokens]):
            for (index, _), samples in zip(bucket, self._run([item for _, item in bucket]), strict=True):
                audio[index] = samples
        return [audio.get(index, np.zeros(0, dtype=np.float32)) for index in range(len(items))]

    def _run(self, items: Sequence[VocodeItem]) -> list[np.ndarray]:
        import torch

        with torch.inference_mode():
            if self._batched_estimator:
                mels = self._mels(items)
            else:
                mels = [mel for item in items for mel in self._mels([item])]
            mels = [_change_speed(mel, item.speed) for mel, item in zip(mels, items, strict=True)]
            return self._audio(mels, items)

    # ------------------------------------------------------------------------ flow --

    def _mels(self, items: Sequence[VocodeItem]) -> list[torch.Tensor]:
        import torch
        import torch.nn.functional as F  # noqa: N812

        flow, device = self._flow, self._device
        with self._autocast():
            embedding = torch.concat([item.embedding.to(device) for item in items])
            speakers = flow.spk_embed_affine_layer(F.normalize(embedding, dim=1))
            sequences = [
                torch.concat(
                    [
                        item.prompt_token.to(device).reshape(-1),
                        torch.tensor(list(item.tokens), dtype=torch.int32, device=device),
                    ]
                )
                for item in items
            ]
            lengths = torch.tensor([len(s) for s in sequences], dtype=torch.int32, device=device)
            tokens = torch.nn.utils.rnn.pad_sequence(sequences, batch_first=True)
            token_mask = (torch.arange(tokens.shape[1], device=device) < lengths.unsqueeze(1)).unsqueeze(-1)
            embedded = flow.input_embedding(torch.clamp(tokens, min=0)) * token_mask.to(embedding.dtype)
            if self._v3:
                h = flow.pre_lookahead_layer(embedded).repeat_interleave(flow.token_mel_ratio, dim=1)
                mel_lengths = lengths * flow.token_mel_ratio
            else:
                h, h_masks = _encode_v2(flow.encoder, embedded, lengths)
                h = flow.encoder_proj(h)
                mel_lengths = h_masks.sum(dim=-1).reshape(-1)
            width = h.shape[1]
            conds = torch.zeros(len(items), width, flow.output_size, device=device, dtype=h.dtype)
            for row, item in enumerate(items):
                conds[row, : item.prompt_feat.shape[1]] = item.prompt_feat.to(device)
            mask = (torch.arange(width, device=device) < mel_lengths.unsqueeze(1)).to(h).unsqueeze(1)
            feats = self._solve(h.transpose(1, 2).contiguous(), mask, speakers, conds.transpose(1, 2))
        return [
            feats[row : row + 1, :, item.prompt_feat.shape[1] : int(mel_lengths[row])]
            for row, item in enumerate(items)
        ]

    def _solve(
        self, mu: torch.Tensor, mask: torch.Tensor, spks: torch.Tensor, cond: torch.Tensor
    ) -> torch.Tensor:
        """CausalConditionalCFM.forward + solve_euler for a batch: its fixed noise, cosine time
        schedule and classifier-free guidance, one estimator call per step for all rows."""
        import torch

        cfm = self._flow.decoder
        rows, _, width = mu.shape
        dtype = spks.dtype
        x = cfm.rand_noise[:, :, :width].to(mu.device).to(mu.dtype).expand(rows, -1, -1)
        t_span = torch.linspace(0, 1, N_TIMESTEPS + 1, device=mu.device, dtype=mu.dtype)
        if cfm.t_scheduler == "cosine":
            t_span = 1 - torch.cos(t_span * 0.5 * torch.pi)
        t, dt = t_span[0].unsqueeze(0), t_span[1] - t_span[0]
        x_in = torch.zeros([2 * rows, 80, width], device=mu.device, dtype=dtype)
        mask_in = torch.zeros([2 * rows, 1, width], device=mu.device, dtype=dtype)
        mu_in = torch.zeros([2 * rows, 80, width], device=mu.device, dtype=dtype)
        t_in = torch.zeros([2 * rows], device=mu.device, dtype=dtype)
        spks_in = torch.zeros([2 * rows, 80], device=mu.device, dtype=dtype)
        cond_in = torch.zeros([2 * rows, 80, width], device=mu.device, dtype=dtype)
        mask_in[:rows], mask_in[rows:] = mask, mask
        mu_in[:rows], spks_in[:rows], cond_in[:rows] = mu, spks, cond
        for step in range(1, len(t_span)):
            x_in[:rows], x_in[rows:] = x, x
            t_in[:] = t.unsqueeze(0)
            dphi_dt = cfm.forward_estimator(x_in, mask_in, mu_in, t_in, spks_in, cond_in, False)
            conditional, unconditional = torch.split(dphi_dt, [rows, rows], dim=0)
            dphi_dt = (1.0 + cfm.inference_cfg_rate) * conditional - cfm.inference_cfg_rate * unconditional
            x = x + dt * dphi_dt
            t = t + dt
            if step < len(t_span) - 1:
                dt = t_span[step + 1] - t
        solved: torch.Tensor = x.float()
        return solved

    # ----------------------------------------------------------------------- HiFT --

    def _audio(self, mels: list[torch.Tensor], items: Sequence[VocodeItem]) -> list[np.ndarray]:
        import torch
        import torch.nn.functional as F  # noqa: N812

        if not self._v3:
            return [self._seeded_v2_audio(mel, item.seed) for mel, item in zip(mels, items, strict=True)]
        widths = [int(mel.shape[2]) for mel in mels]
        width = max(widths)
        batch = torch.concat([F.pad(mel, (0, width - mel.shape[2])) for mel in mels])
        with self._autocast():
            speech, _ = self._hift.inference(speech_feat=batch, finalize=True)
        per_frame = speech.shape[1] // width if width else 0
        return [speech[row, : w * per_frame].float().cpu().numpy() for row, w in enumerate(widths)]

    def _seeded_v2_audio(self, mel: torch.Tensor, seed: int) -> np.ndarray:
        import torch

        devices = [self._device] if self._device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            speech, _ = self._hift.inference(speech_feat=mel, cache_source=torch.zeros(1, 1, 0))
        return speech[0].float().cpu().numpy()  # type: ignore[no-any-return]

    @contextlib.contextmanager
    def _autocast(self) -> Iterator[None]:
        import torch

        if self._fp16 and self._device.type == "cuda":
            with torch.autocast("cuda", dtype=torch.float16):
                yield
        else:
            yield


def length_buckets(items: Sequence[tuple[int, VocodeItem]]) -> list[list[tuple[int, VocodeItem]]]:
    """`items` by length, cut wherever padding to the bucket's longest would waste more than
    PADDING_WASTE of its frames: padded frames are computed like real ones, in every one of the
    flow's 10 steps."""
    buckets: list[list[tuple[int, VocodeItem]]] = []
    for entry in sorted(items, key=lambda e: e[1].frames):
        bucket = buckets[-1] if buckets else None
        if bucket is not None:
            real = sum(item.frames for _, item in bucket) + entry[1].frames
            if entry[1].frames * (len(bucket) + 1) <= (1 + PADDING_WASTE) * real:
                bucket.append(entry)
                continue
        buckets.append([entry])
    return buckets


def _encode_v2(encoder: Any, xs: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """`UpsampleConformerEncoder.forward` (non-streaming) for a padded batch. Its look-ahead
    layer reads three positions past each row's end; alone, those are the layer's zero padding,
    but in a batch they are the embedding of padding, and the full attention after it spreads
    the difference over the whole row. So the padded positions are zeroed before the look-ahead;
    every other step is the encoder's own, in its order."""
    from cosyvoice.utils.mask import add_optional_chunk_mask, make_pad_mask

    masks = ~make_pad_mask(lengths, xs.size(1)).unsqueeze(1)
    if encoder.global_cmvn is not None:
        xs = encoder.global_cmvn(xs)
    xs, pos_emb, masks = encoder.embed(xs, masks)
    xs = xs * masks.transpose(1, 2).to(xs.dtype)
    chunk_masks = add_optional_chunk_mask(xs, masks, False, False, 0, 0, -1)
    xs = encoder.pre_lookahead_layer(xs)
    xs = encoder.forward_layers(xs, chunk_masks, pos_emb, masks)
    xs, lengths = encoder.up_layer(xs.transpose(1, 2).contiguous(), lengths)
    xs = xs.transpose(1, 2).contiguous()
    masks = ~make_pad_mask(lengths, xs.size(1)).unsqueeze(1)
    xs, pos_emb, masks = encoder.up_embed(xs, masks)
    chunk_masks = add_optional_chunk_mask(xs, masks, False, False, 0, 0, -1)
    xs = encoder.forward_up_layers(xs, chunk_masks, pos_emb, masks)
    if encoder.normalize_before:
        xs = encoder.after_norm(xs)
    return xs, masks


def _change_speed(mel: torch.Tensor, speed: float) -> torch.Tensor:
    """The official non-streaming speed change: the mel stretched by linear interpolation."""
    import torch.nn.functional as F  # noqa: N812

    if speed == 1.0:
        return mel
    return F.interpolate(mel, size=int(mel.shape[2] / speed), mode="linear")
