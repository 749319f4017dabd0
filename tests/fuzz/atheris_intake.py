"""Coverage-guided fuzzing of the worker's intake with atheris (libFuzzer for Python).

    .venv/bin/python tests/fuzz/atheris_intake.py -max_total_time=60      # what `make fuzz` runs
    .venv/bin/python tests/fuzz/atheris_intake.py -runs=100000 -max_len=2048

Each input is a Kafka message value; it goes through the same target as the hypothesis tests
(tests/fuzz/targets.py: decode, validate, allow-lists, capabilities, deadline, then the dead
letter or answer the worker would publish), and prompt-audio URIs of decodable requests through
the allow-list. The repository corpus (tests/fuzz/corpus) seeds it; new coverage-increasing
inputs go to a temporary folder. A failure stops the run and leaves crash-<sha1> in the current
directory: add that input to tests/fuzz/make_corpus.py with the outcome it should have had.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import atheris

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

with atheris.instrument_imports(include=["schemas", "consumer", "tests.fuzz"]):
    from schemas.codec import request_codec
    from schemas.errors import DecodeError
    from schemas.model import PromptAudioVoice
    from tests.fuzz.targets import AllowListTarget, IntakeTarget

TARGET = IntakeTarget()
ALLOWLIST = AllowListTarget()
CODEC = request_codec()
CORPUS = Path(__file__).resolve().parent / "corpus"


def test_one_input(data: bytes) -> None:
    TARGET(data)
    try:
        request = CODEC.decode(data)
    except DecodeError:
        return
    if isinstance(request.voice, PromptAudioVoice):
        ALLOWLIST(request.voice.audio_uri)


def main() -> None:
    args = list(sys.argv)
    if not any(not a.startswith("-") for a in args[1:]):
        # No corpus folders given: new inputs go to a scratch folder, the repository's seed it.
        args += [tempfile.mkdtemp(prefix="tts-fuzz-"), str(CORPUS)]
    if not any(a.startswith("-max_len") for a in args):
        args.append("-max_len=4096")
    atheris.Setup(args, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
