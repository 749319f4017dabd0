"""A Qwen2-compatible tokenizer trained here, standing in for `CosyVoice-BlankEN`'s.

CosyVoice loads the directory with `AutoTokenizer.from_pretrained` and then adds its own special
tokens; its CosyVoice 3 LLM asserts that `<|endofprompt|>` is token 151646. That holds only when
the base tokenizer has exactly Qwen's layout: 151,643 ordinary tokens, then `<|endoftext|>`,
`<|im_start|>` and `<|im_end|>` (151643-151645), so the first token CosyVoice adds lands on
151646. We train a byte-level BPE (Qwen's kind) on a small built-in corpus -- English sentences
plus every CJK ideograph, so a Chinese character is one token as in Qwen and texts cost a
realistic number of tokens -- and fill the rest of the 151,643 ids with tokens no merge can
produce.
"""

from __future__ import annotations

import json
from pathlib import Path

BASE_TOKENS = 151_643
QWEN_SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")

_ENGLISH = """\
The quick brown fox jumps over the lazy dog. Hello, this is a test of the speech service.
Please call me back when you have a moment, and thank you for waiting.
Your order has shipped and will arrive on Monday between nine and eleven in the morning.
We are sorry, the number you have dialled is not in service. Try again later.
Good morning! The weather today is sunny with a light breeze from the west.
One two three four five six seven eight nine ten eleven twelve hundred thousand million.
Speak cheerfully, slowly, quickly, sadly, with excitement, in a whisper, like a narrator.
You are a helpful assistant. Read the following sentence aloud in a calm voice.
"""
_CHINESE = """\
你好，欢迎使用语音合成服务。今天天气很好，我们一起去公园散步吧。
请在听到提示音后留言，谢谢您的耐心等待。您的订单已经发货，预计周一送达。
"""
_CJK = (0x4E00, 0x9FFF)


def corpus() -> list[str]:
    lines = [*_ENGLISH.splitlines(), *_CHINESE.splitlines()]
    # One ideograph a line: the pre-tokenizer keeps each apart, so BPE learns each as a token.
    lines.extend(chr(code) for code in range(_CJK[0], _CJK[1] + 1))
    return lines


def write_tokenizer(directory: Path) -> int:
    """Write tokenizer.json, vocab.json, merges.txt and tokenizer_config.json; return the
    number of tokens learned by training (the rest of the base ids are filler)."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.normalizer = normalizers.NFC()
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=BASE_TOKENS,
        min_frequency=1,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tokenizer.train_from_iterator(corpus(), trainer=trainer)
    spec = json.loads(tokenizer.to_str())
    vocab: dict[str, int] = spec["model"]["vocab"]
    learned = len(vocab)
    if learned > BASE_TOKENS:
        raise RuntimeError(f"the trained vocabulary has {learned} tokens, more than {BASE_TOKENS}")
    # Filler ids: strings of byte-level symbols that no merge builds, so they never appear.
    for filler in range(learned, BASE_TOKENS):
        vocab[f"<unused{filler}>"] = filler
    spec["added_tokens"] = [
        {
            "id": BASE_TOKENS + offset,
            "content": token,
            "single_word": False,
            "lstrip": False,
            "rstrip": False,
            "normalized": False,
            "special": True,
        }
        for offset, token in enumerate(QWEN_SPECIALS)
    ]
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "tokenizer.json").write_text(json.dumps(spec, ensure_ascii=False), encoding="utf-8")
    (directory / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    merges = [" ".join(pair) if isinstance(pair, list) else pair for pair in spec["model"]["merges"]]
    (directory / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    config = {
        "tokenizer_class": "Qwen2Tokenizer",
        "model_max_length": 32768,
        "bos_token": None,
        "eos_token": "<|endoftext|>",
        "pad_token": "<|endoftext|>",
        "unk_token": None,
        "additional_special_tokens": list(QWEN_SPECIALS[1:]),
        "added_tokens_decoder": {
            str(token["id"]): {k: v for k, v in token.items() if k != "id"} for token in spec["added_tokens"]
        },
        "clean_up_tokenization_spaces": False,
        "errors": "replace",
        "split_special_tokens": False,
    }
    (directory / "tokenizer_config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    return learned
