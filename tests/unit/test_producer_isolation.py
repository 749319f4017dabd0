"""The producer side installs and imports without the worker's dependencies."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
WORKER_ONLY = [
    "torch",
    "torchaudio",
    "redis",
    "boto3",
    "botocore",
    "soundfile",
    "prometheus_client",
    "consumer",
]


def _modules_after(code: str) -> set[str]:
    program = textwrap.dedent(code) + "\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))\n"
    out = subprocess.run(
        [sys.executable, "-c", program], cwd=ROOT, capture_output=True, text=True, check=True, timeout=120
    )
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def test_library_imports_without_worker_dependencies() -> None:
    loaded = _modules_after(
        """
        import producer
        import producer.backfill
        from producer import TtsProducer, ResultSubscriber
        """
    )
    assert "producer.client" in loaded
    assert not {m for m in loaded if m.split(".")[0] in WORKER_ONLY}


def test_producer_commands_load_without_worker_dependencies() -> None:
    loaded = _modules_after(
        """
        from click.testing import CliRunner
        from tts_stream.cli import main
        for command in ("submit", "watch", "backfill", "topics"):
            result = CliRunner().invoke(main, [command, "--help"])
            assert result.exit_code == 0, result.output
        """
    )
    assert {"producer.cli_submit", "producer.cli_backfill"} <= loaded
    assert not {m for m in loaded if m.split(".")[0] in WORKER_ONLY}


def test_public_api_is_declared() -> None:
    import producer

    assert producer.__all__ == sorted(producer.__all__)
    for name in producer.__all__:
        assert hasattr(producer, name), name
