"""The shapes of a test model, per family and size, and the HyperPyYAML file that builds it.

`full` uses the released models' dimensions (Qwen2-0.5B backbone; CosyVoice 3's 22-layer DiT
flow; CosyVoice 2's conformer encoder and U-Net decoder; the 512-channel HiFT vocoder), so its
parameter counts can be compared with the released checkpoints. `tiny` keeps every structural
number that fixes the audio's timing -- 24 kHz output, 25 speech tokens a second, two mel
frames per token, 480 samples per mel frame, 6561 speech codes, Qwen's 151,936-entry text
vocabulary -- and shrinks only widths and depths, so a short request costs well under a second
of CPU. `mid` sits between them (about a twentieth of the full model's compute per token, with
the full model's head width of 64): big enough that the arithmetic, not Python, dominates a CPU
run, small enough for a benchmark of many requests on two cores.

The yaml instantiates CosyVoice's own classes by their import paths, exactly as the released
`cosyvoice2.yaml` / `cosyvoice3.yaml` do. It holds only the keys the inference classes read
(`sample_rate`, `llm`, `flow`, `hift`, `get_tokenizer`, `feat_extractor`, `allowed_special`);
the released files also carry the training pipeline, which loading never uses.
"""

from __future__ import annotations

from dataclasses import dataclass

FAMILIES = ("cosyvoice3", "cosyvoice2")
SIZES = ("tiny", "mid", "full")

# Fixed by the released models: changing any of these changes the model's contract.
SAMPLE_RATE_HZ = 24_000
SPEECH_TOKENS = 6561  # FSQ codes: 3 levels in each of 8 dimensions
TOKEN_FRAME_RATE = 25
TOKEN_MEL_RATIO = 2
CHUNK_TOKENS = 25
QWEN_VOCAB = 151_936  # Qwen2's embedding rows: room for CosyVoice's added special tokens


@dataclass(frozen=True, slots=True)
class QwenDims:
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int


@dataclass(frozen=True, slots=True)
class FlowDims:
    width: int  # DiT dim (v3) or conformer width (v2, which must be 512)
    depth: int  # DiT blocks (v3) or conformer blocks (v2)
    heads: int
    head_dim: int
    lookahead_channels: int  # v3's PreLookaheadLayer
    decoder_channels: int  # v2's U-Net
    decoder_blocks: int
    decoder_mid_blocks: int
    encoder_ff: int  # v2's conformer feed-forward units


@dataclass(frozen=True, slots=True)
class HiftDims:
    base_channels: int


@dataclass(frozen=True, slots=True)
class ModelDims:
    family: str
    size: str
    qwen: QwenDims
    flow: FlowDims
    hift: HiftDims


_QWEN = {
    "full": QwenDims(hidden=896, intermediate=4864, layers=24, heads=14, kv_heads=2),
    "mid": QwenDims(hidden=384, intermediate=2048, layers=8, heads=6, kv_heads=2),
    "tiny": QwenDims(hidden=64, intermediate=128, layers=2, heads=4, kv_heads=2),
}
_FLOW = {
    ("cosyvoice3", "full"): FlowDims(1024, 22, 16, 64, 1024, 0, 0, 0, 0),
    ("cosyvoice3", "mid"): FlowDims(256, 6, 4, 64, 256, 0, 0, 0, 0),
    ("cosyvoice3", "tiny"): FlowDims(64, 2, 2, 32, 64, 0, 0, 0, 0),
    ("cosyvoice2", "full"): FlowDims(512, 6, 8, 64, 0, 256, 4, 12, 2048),
    # CosyVoice 2's encoder hard-codes 512 channels in its look-ahead and upsampling layers.
    ("cosyvoice2", "mid"): FlowDims(512, 3, 8, 64, 0, 128, 2, 4, 1024),
    ("cosyvoice2", "tiny"): FlowDims(512, 1, 4, 32, 0, 64, 1, 2, 256),
}
_HIFT = {"full": HiftDims(512), "mid": HiftDims(128), "tiny": HiftDims(32)}


def dims_for(family: str, size: str) -> ModelDims:
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}: one of {', '.join(FAMILIES)}")
    if size not in SIZES:
        raise ValueError(f"unknown size {size!r}: one of {', '.join(SIZES)}")
    return ModelDims(family, size, _QWEN[size], _FLOW[family, size], _HIFT[size])


def qwen_config(dims: ModelDims) -> dict[str, object]:
    """The `config.json` of the stand-in for CosyVoice-BlankEN (Qwen2-0.5B's layout)."""
    q = dims.qwen
    return {
        "architectures": ["Qwen2ForCausalLM"],
        "model_type": "qwen2",
        "vocab_size": QWEN_VOCAB,
        "hidden_size": q.hidden,
        "intermediate_size": q.intermediate,
        "num_hidden_layers": q.layers,
        "num_attention_heads": q.heads,
        "num_key_value_heads": q.kv_heads,
        "max_position_embeddings": 32768,
        "rope_theta": 1_000_000.0,
        "rms_norm_eps": 1e-6,
        "hidden_act": "silu",
        "tie_word_embeddings": True,
        "use_sliding_window": False,
        "bos_token_id": 151643,
        "eos_token_id": 151643,
        "torch_dtype": "float32",
    }


# ------------------------------------------------------------------------------ the yaml --

_HEADER = """\
# A CosyVoice {family} model with random weights, made by `tts-stream models make-test-model`
# (size {size}). It loads through CosyVoice's own AutoModel; its audio is noise.
sample_rate: {rate}
llm_input_size: {hidden}
llm_output_size: {hidden}
spk_embed_dim: 192
qwen_pretrain_path: ''
token_frame_rate: {frame_rate}
token_mel_ratio: {mel_ratio}
chunk_size: {chunk}
num_decoding_left_chunks: -1
"""

_LLM = """\
llm: !new:cosyvoice.llm.llm.{llm_class}
    llm_input_size: !ref <llm_input_size>
    llm_output_size: !ref <llm_output_size>
    speech_token_size: {codes}
    length_normalized_loss: True
    lsm_weight: 0
    mix_ratio: [5, 15]
    llm: !new:cosyvoice.llm.llm.Qwen2Encoder
        pretrain_path: !ref <qwen_pretrain_path>
    sampling: !name:cosyvoice.utils.common.ras_sampling
        top_p: 0.8
        top_k: 25
        win_size: 10
        tau_r: 0.1
"""

_CFM = """\
    decoder: !new:cosyvoice.flow.flow_matching.CausalConditionalCFM
        in_channels: 240
        n_spks: 1
        spk_emb_dim: 80
        cfm_params: !new:omegaconf.DictConfig
            content:
                sigma_min: 1e-06
                solver: 'euler'
                t_scheduler: 'cosine'
                training_cfg_rate: 0.2
                inference_cfg_rate: 0.7
                reg_loss_type: 'l1'
"""

# The keys both families' flow models take alike.
_FLOW_COMMON = """\
    output_size: 80
    spk_embed_dim: !ref <spk_embed_dim>
    output_type: 'mel'
    vocab_size: {codes}
    input_frame_rate: !ref <token_frame_rate>
    only_mask_loss: True
    token_mel_ratio: !ref <token_mel_ratio>
    pre_lookahead_len: 3
"""

_FLOW_V3 = """\
flow: !new:cosyvoice.flow.flow.CausalMaskedDiffWithDiT
    input_size: 80
{common}    pre_lookahead_layer: !new:cosyvoice.transformer.upsample_encoder.PreLookaheadLayer
        in_channels: 80
        channels: {lookahead}
        pre_lookahead_len: 3
{cfm}        estimator: !new:cosyvoice.flow.DiT.dit.DiT
            dim: {width}
            depth: {depth}
            heads: {heads}
            dim_head: {head_dim}
            ff_mult: 2
            mel_dim: 80
            mu_dim: 80
            spk_dim: 80
            out_channels: 80
            static_chunk_size: !ref <chunk_size> * <token_mel_ratio>
            num_decoding_left_chunks: !ref <num_decoding_left_chunks>
"""

_FLOW_V2 = """\
flow: !new:cosyvoice.flow.flow.CausalMaskedDiffWithXvec
    input_size: {width}
{common}    encoder: !new:cosyvoice.transformer.upsample_encoder.UpsampleConformerEncoder
        output_size: {width}
        attention_heads: {heads}
        linear_units: {encoder_ff}
        num_blocks: {depth}
        dropout_rate: 0.1
        positional_dropout_rate: 0.1
        attention_dropout_rate: 0.1
        normalize_before: True
        input_layer: 'linear'
        pos_enc_layer_type: 'rel_pos_espnet'
        selfattention_layer_type: 'rel_selfattn'
        input_size: {width}
        use_cnn_module: False
        macaron_style: False
        static_chunk_size: !ref <chunk_size>
{cfm}        estimator: !new:cosyvoice.flow.decoder.CausalConditionalDecoder
            in_channels: 320
            out_channels: 80
            channels: [{decoder_channels}]
            dropout: 0.0
            attention_head_dim: {head_dim}
            n_blocks: {decoder_blocks}
            num_mid_blocks: {decoder_mid_blocks}
            num_heads: {heads}
            act_fn: 'gelu'
            static_chunk_size: !ref <chunk_size> * <token_mel_ratio>
            num_decoding_left_chunks: !ref <num_decoding_left_chunks>
"""

_HIFT_YAML = """\
hift: !new:cosyvoice.hifigan.generator.{hift_class}
    in_channels: 80
    base_channels: {base}
    nb_harmonics: 8
    sampling_rate: !ref <sample_rate>
    nsf_alpha: 0.1
    nsf_sigma: 0.003
    nsf_voiced_threshold: 10
    upsample_rates: [8, 5, 3]
    upsample_kernel_sizes: [16, 11, 7]
    istft_params:
        n_fft: 16
        hop_len: 4
    resblock_kernel_sizes: [3, 7, 11]
    resblock_dilation_sizes: [[1, 3, 5], [1, 3, 5], [1, 3, 5]]
    source_resblock_kernel_sizes: [7, 7, 11]
    source_resblock_dilation_sizes: [[1, 3, 5], [1, 3, 5], [1, 3, 5]]
    lrelu_slope: 0.1
    audio_limit: 0.99
{look_right}    f0_predictor: !new:cosyvoice.hifigan.f0_predictor.{f0_class}
        num_class: 1
        in_channels: 80
        cond_channels: {base}
"""

_FRONTEND = """\
get_tokenizer: !name:cosyvoice.tokenizer.tokenizer.get_qwen_tokenizer
    token_path: !ref <qwen_pretrain_path>
    skip_special_tokens: True
    version: {family}
allowed_special: 'all'
feat_extractor: !name:matcha.utils.audio.mel_spectrogram
    n_fft: 1920
    num_mels: 80
    sampling_rate: !ref <sample_rate>
    hop_size: 480
    win_size: 1920
    fmin: 0
    fmax: null
    center: False
"""


def render_yaml(dims: ModelDims) -> str:
    v3 = dims.family == "cosyvoice3"
    f = dims.flow
    header = _HEADER.format(
        family=dims.family,
        size=dims.size,
        rate=SAMPLE_RATE_HZ,
        hidden=dims.qwen.hidden,
        frame_rate=TOKEN_FRAME_RATE,
        mel_ratio=TOKEN_MEL_RATIO,
        chunk=CHUNK_TOKENS,
    )
    llm = _LLM.format(llm_class="CosyVoice3LM" if v3 else "Qwen2LM", codes=SPEECH_TOKENS)
    flow = (_FLOW_V3 if v3 else _FLOW_V2).format(
        common=_FLOW_COMMON.format(codes=SPEECH_TOKENS),
        cfm=_CFM,
        width=f.width,
        depth=f.depth,
        heads=f.heads,
        head_dim=f.head_dim,
        lookahead=f.lookahead_channels,
        encoder_ff=f.encoder_ff,
        decoder_channels=f.decoder_channels,
        decoder_blocks=f.decoder_blocks,
        decoder_mid_blocks=f.decoder_mid_blocks,
    )
    hift = _HIFT_YAML.format(
        hift_class="CausalHiFTGenerator" if v3 else "HiFTGenerator",
        f0_class="CausalConvRNNF0Predictor" if v3 else "ConvRNNF0Predictor",
        base=dims.hift.base_channels,
        look_right="    conv_pre_look_right: 4\n" if v3 else "",
    )
    return "\n".join([header, llm, flow, hift, _FRONTEND.format(family=dims.family)])
