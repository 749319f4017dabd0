"""The Dockerfile and docker-compose.yml, checked without a Docker engine (none runs here).

docker-compose.yml goes through the real Compose CLI (`docker compose config`, built from source
by scripts/compose.sh), which validates it against the compose specification and resolves
anchors and merges exactly as `docker compose up` would. The Dockerfile is checked statically;
no image is built here (see docs/deploy.md, "What was exercised").
"""

from __future__ import annotations

import importlib.metadata
import json
import re
import subprocess
import sys
import textwrap
import tomllib
from typing import Any

import pytest

from tests.helm.chart import ROOT

COMPOSE_SH = ROOT / "scripts" / "compose.sh"


def compose(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(COMPOSE_SH), "-f", str(ROOT / "docker-compose.yml"), *args],
        capture_output=True,
        text=True,
        timeout=1800,  # the first run compiles the CLI
        check=False,
        cwd=ROOT,
    )


@pytest.fixture(scope="module")
def compose_model() -> dict[str, Any]:
    result = compose("--profile", "gpu", "config", "--format", "json")
    assert result.returncode == 0, result.stderr
    model = json.loads(result.stdout)
    assert isinstance(model, dict)
    return model


def test_compose_file_is_valid() -> None:
    result = compose("config", "--quiet")
    assert result.returncode == 0, result.stderr


def test_compose_cli_rejects_an_invalid_file(tmp_path: Any) -> None:
    bad = tmp_path / "compose.yml"
    bad.write_text("services:\n  worker:\n    image: x\n    restart_policy: always\n", encoding="utf-8")
    result = subprocess.run(
        [str(COMPOSE_SH), "-f", str(bad), "config", "--quiet"], capture_output=True, text=True, check=False
    )
    assert result.returncode != 0
    assert "restart_policy" in result.stderr


def test_compose_runs_the_whole_stack(compose_model: dict[str, Any]) -> None:
    services = compose_model["services"]
    assert {"kafka", "redis", "s3", "buckets", "topics", "worker", "worker-gpu"} <= set(services)
    assert services["worker"]["command"] == ["worker"]
    assert services["worker"]["environment"]["TTS_ENGINE"] == "espeak"
    assert services["worker-gpu"]["build"]["target"] == "gpu"
    assert services["buckets"]["build"]["target"] == "cpu"
    assert services["topics"]["command"][:2] == ["topics", "ensure"]
    assert services["worker"]["depends_on"]["topics"]["condition"] == "service_completed_successfully"


def test_compose_publishes_on_loopback_only(compose_model: dict[str, Any]) -> None:
    published = [
        (name, port)
        for name, service in compose_model["services"].items()
        for port in service.get("ports", [])
    ]
    assert published
    for name, port in published:
        assert port["host_ip"] == "127.0.0.1", f"{name} publishes {port} beyond loopback"


@pytest.mark.parametrize("service", ["worker", "worker-gpu", "topics", "buckets"])
def test_compose_workers_are_hardened(compose_model: dict[str, Any], service: str) -> None:
    spec = compose_model["services"][service]
    assert spec["user"] == "10001:10001"
    assert spec["read_only"] is True
    assert spec["cap_drop"] == ["ALL"]
    assert "no-new-privileges:true" in spec["security_opt"]


def test_compose_grace_period_covers_the_drain(compose_model: dict[str, Any]) -> None:
    for name in ("worker", "worker-gpu"):
        spec = compose_model["services"][name]
        drain = float(spec["environment"]["TTS_DRAIN_TIMEOUT_S"])
        grace = int(re.fullmatch(r"(\d+)s", spec["stop_grace_period"]).group(1))  # type: ignore[union-attr]
        assert grace >= drain + 10


# ---------------------------------------------------------------- Dockerfile (static) ------------


def dockerfile_stages() -> dict[str, list[str]]:
    """Stage name -> its instructions (continuation lines joined)."""
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    text = re.sub(r"\\\n", " ", text)
    stages: dict[str, list[str]] = {}
    current: list[str] | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if match := re.match(r"FROM\s+\S+(?:\s+AS\s+(\S+))?", line, re.IGNORECASE):
            current = stages.setdefault(match.group(1) or f"stage{len(stages)}", [])
        if current is not None:
            current.append(line)
    return stages


@pytest.mark.parametrize("target", ["cpu", "gpu", "gateway"])
def test_runtime_images_are_non_root_labelled_and_health_checked(target: str) -> None:
    stage = dockerfile_stages()[target]
    assert any(re.fullmatch(r"USER 10001:10001", i) for i in stage)
    assert any(i.startswith("HEALTHCHECK") and "/livez" in i for i in stage)
    labels = " ".join(i for i in stage if i.startswith("LABEL"))
    for key in ("title", "licenses", "version", "revision", "created"):
        assert f"org.opencontainers.image.{key}=" in labels
    assert 'ENTRYPOINT ["tts-stream"]' in stage
    assert f'CMD ["{"gateway" if target == "gateway" else "worker"}"]' in stage


def test_the_gateway_image_installs_no_worker_extra() -> None:
    """Producer side: the `[gateway]` extra only, so no torch in the image."""
    installs = " ".join(i for i in dockerfile_stages()["gateway-venv"] if "pip install" in i)
    assert "[gateway]" in installs and "worker" not in installs


def test_gpu_image_builds_on_cuda_and_bakes_in_no_model() -> None:
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    assert re.search(r"^ARG CUDA_IMAGE=nvidia/cuda:[\w.-]+-runtime-", text, re.MULTILINE)
    assert "FROM ${CUDA_IMAGE} AS gpu" in text
    copies = [i for s in dockerfile_stages().values() for i in s if i.startswith(("COPY", "ADD"))]
    for instruction in copies:
        assert "model" not in instruction.lower(), instruction
    ignored = (ROOT / ".dockerignore").read_text(encoding="utf-8").split()
    for pattern in ("models", "**/*.safetensors", "**/*.pt", ".infra", ".venv", ".git"):
        assert pattern in ignored


def test_the_topics_commands_need_only_what_the_gateway_image_installs() -> None:
    """The chart's topics Job runs the gateway image: every distribution `tts-stream topics`
    imports must be a base dependency or in the `[gateway]` extra (torch is in neither)."""
    program = textwrap.dedent(
        """
        import json, sys
        from click.testing import CliRunner
        from tts_stream.cli import main
        for args in (["topics", "ensure", "--help"], ["topics", "init-group", "--help"]):
            result = CliRunner().invoke(main, args)
            assert result.exit_code == 0, result.output
        print(json.dumps(sorted({m.split(".")[0] for m in sys.modules})))
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", program], cwd=ROOT, capture_output=True, text=True, check=True, timeout=120
    )
    top_level = set(json.loads(out.stdout.strip().splitlines()[-1]))
    owners = importlib.metadata.packages_distributions()
    loaded = {canonical(dist) for module in top_level for dist in owners.get(module, [])}
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    allowed = {canonical(requirement_name(r)) for r in project["dependencies"]}
    allowed |= {canonical(requirement_name(r)) for r in project["optional-dependencies"]["gateway"]}
    # what those pull in is installed with them; the image's own distribution is the project
    needed = loaded - {canonical(project["name"])}
    direct = needed & allowed
    assert "torch" not in needed
    assert {"confluent-kafka", "click", "pydantic-settings"} <= direct
    for dist in needed - allowed:
        assert any(dist in transitive_requirements(a) for a in direct), f"{dist} comes with no allowed dep"


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_name(requirement: str) -> str:
    match = re.match(r"[A-Za-z0-9_.-]+", requirement)
    assert match, requirement
    return match.group(0)


def transitive_requirements(dist: str, seen: set[str] | None = None) -> set[str]:
    seen = set() if seen is None else seen
    # Extras included: the base dependency is `confluent-kafka[schemaregistry]`.
    try:
        requirements = importlib.metadata.requires(dist) or []
    except importlib.metadata.PackageNotFoundError:  # an optional one, not installed here
        return seen
    for requirement in requirements:
        name = canonical(requirement_name(requirement))
        if name not in seen:
            seen.add(name)
            transitive_requirements(name, seen)
    return seen
