"""Each Dockerfile target installs only its own lock, runs as non-root on a pinned base, and its
Python environment, built here from the same lock and install lines (there is no Docker engine),
imports and starts its entry point."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.manifests import REPO_ROOT

DOCKERFILE = (REPO_ROOT / "Dockerfile").read_text()
TARGETS = ("operator", "jobs", "serve", "drift")
ENTRY_CHECKS = {
    "operator": ["-m", "optiloop", "operator", "--help"],
    "jobs": ["-m", "optiloop.jobs.compress", "--help"],
    "serve": ["-m", "optiloop.serve", "--help"],
    "drift": ["-m", "optiloop.drift", "serve", "--help"],
}


@dataclass
class Stage:
    name: str
    lines: list[str]

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


def stages() -> dict[str, Stage]:
    """The Dockerfile's stages by name, with continuation lines joined."""
    joined = re.sub(r"\\\n\s*", " ", DOCKERFILE)
    result: dict[str, Stage] = {}
    current: Stage | None = None
    for line in joined.splitlines():
        match = re.match(r"FROM\s+\S+\s+AS\s+(\S+)", line)
        if match:
            current = Stage(match.group(1), [line])
            result[current.name] = current
        elif current is not None:
            current.lines.append(line)
    return result


def test_every_image_has_a_target_on_a_pinned_slim_base() -> None:
    base = re.search(r"ARG PYTHON_IMAGE=(\S+)", DOCKERFILE)
    assert base is not None
    assert re.fullmatch(r"python:3\.11\.\d+-slim-\w+(@sha256:[0-9a-f]{64})?", base.group(1))
    found = stages()
    for target in TARGETS:
        assert target in found, f"no `{target}` target"
        final = found[target].text
        assert "USER 65532:65532" in final
        assert f"COPY --from={target}-builder /opt/venv /opt/venv" in final
        assert "apt-get" not in final, f"{target}: build tools in the final stage"
        assert "pip install" not in final, f"{target}: installs belong in the builder stage"
        assert "HEALTHCHECK" in final or "No HEALTHCHECK" in final, f"{target}: say how it is probed"


def install_lines(target: str) -> tuple[Path, str]:
    """The lock a target's builder installs and the command that proves the install."""
    builder = stages()[f"{target}-builder"].text
    lock = re.search(r"COPY requirements/(\w+\.lock) /tmp/", builder)
    assert lock is not None, f"{target}-builder copies no lock"
    assert f"--require-hashes --no-deps -r /tmp/{lock.group(1)}" in builder
    assert "pip install --no-deps /src" in builder
    proof = re.search(r'/opt/venv/bin/python -c "([^"]+)"', builder)
    assert proof is not None, f"{target}-builder does not prove its install"
    return REPO_ROOT / "requirements" / lock.group(1), proof.group(1)


@pytest.mark.parametrize("target", TARGETS)
def test_the_targets_environment_builds_from_its_lock_and_starts(target: str, tmp_path: Path) -> None:
    lock, proof = install_lines(target)
    assert lock.name == f"{target}.lock"
    uv = shutil.which("uv") or str(REPO_ROOT / ".venv" / "bin" / "uv")
    venv = tmp_path / "venv"
    python = str(venv / "bin" / "python")
    env = {**os.environ, "UV_LINK_MODE": "hardlink"}
    subprocess.run([uv, "venv", "--quiet", "--python", "3.11", str(venv)], check=True, env=env, timeout=120)
    # The same two installs as the image: the hashed lock without resolving, then optiloop itself.
    subprocess.run([uv, "pip", "sync", "--quiet", "--require-hashes", "--python", python, str(lock)],
                   check=True, env=env, timeout=900)  # fmt: skip
    subprocess.run([uv, "pip", "install", "--quiet", "--no-deps", "--python", python, str(REPO_ROOT)],
                   check=True, env=env, timeout=300)  # fmt: skip
    run = subprocess.run([python, "-c", proof], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert run.returncode == 0, f"{target}: {shlex.quote(proof)} failed:\n{run.stderr[-3000:]}"
    entry = subprocess.run([python, *ENTRY_CHECKS[target]], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert entry.returncode == 0, f"{target}: {ENTRY_CHECKS[target]} failed:\n{entry.stderr[-3000:]}"
    assert "usage:" in entry.stdout
    if target != "jobs":
        # Only this image's extra: no torch where it is not needed.
        listed = subprocess.run([uv, "pip", "list", "--python", python], capture_output=True, text=True, check=True)
        assert ("torch" in listed.stdout) == (target == "drift"), f"{target}: unexpected torch presence"
