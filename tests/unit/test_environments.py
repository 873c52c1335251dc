"""The main and drift environments match their locks, and the drift one stays on Alibi Detect 0.11.4."""

from __future__ import annotations

import json
import re
import subprocess
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.version import Version

from tests.conftest import skip_or_fail
from tests.support.manifests import REPO_ROOT

LOCKS = REPO_ROOT / "requirements"
DRIFT_PYTHON = REPO_ROOT / ".venv-drift" / "bin" / "python"


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pinned(lock: Path) -> dict[str, str]:
    """``{package: version}`` of a lock file; every requirement in it must be an exact pin."""
    pins = {}
    for line in lock.read_text().splitlines():
        if not line or line[0] in "# " or line.startswith("--"):
            continue
        requirement = line.split(" \\")[0].split(";")[0].strip()
        name, sep, version = requirement.partition("==")
        assert sep, f"{lock.name}: {requirement!r} is not an exact pin"
        pins[_normalize(name)] = version
    return pins


def test_main_lock_pins_torch_and_pydantic_2() -> None:
    pins = pinned(LOCKS / "main.lock")
    assert pins["torch"] == "2.13.0"
    assert Version(pins["pydantic"]).major == 2
    # Compared as versions: as text, "1.100" < "1.44" and "1.5" > "1.44".
    assert Version(pins["kopf"]) >= Version("1.44"), "Kopf before 1.44 can lose watch streams silently"


def test_drift_lock_pins_the_last_apache_licensed_alibi_detect() -> None:
    pins = pinned(LOCKS / "drift.lock")
    assert pins["alibi-detect"] == "0.11.4"
    assert pins["numba"] == "0.57.1"
    assert Version(pins["pydantic"]).major == 1
    assert Version(pins["numpy"]) < Version("1.25")
    assert Version(pins["scipy"]) < Version("1.12")


def test_base_requirements_cannot_conflict_with_the_drift_environment() -> None:
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    base = " ".join(project["dependencies"]).lower()
    for package in ("pydantic", "numpy", "scipy", "torch"):
        assert package not in base


def test_main_environment_matches_its_lock() -> None:
    installed = {_normalize(d.metadata["Name"]): d.version for d in metadata.distributions()}
    mismatched = {
        name: (version, installed.get(name))
        for name, version in pinned(LOCKS / "main.lock").items()
        if installed.get(name) != version
    }
    assert not mismatched, f"run `make install`: {mismatched}"


def test_drift_environment_matches_its_lock_and_imports_the_monitor() -> None:
    if not DRIFT_PYTHON.exists():
        skip_or_fail(f"{DRIFT_PYTHON} does not exist: run `make install`")
    probe = (
        "import json, importlib.metadata as m, optiloop.drift, alibi_detect.cd, pydantic; "
        "print(json.dumps({'versions': {d.metadata['Name']: d.version for d in m.distributions()}, "
        "'pydantic': pydantic.VERSION, 'monitor': optiloop.drift.__file__}))"
    )
    result = subprocess.run([str(DRIFT_PYTHON), "-c", probe], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    installed = {_normalize(name): version for name, version in report["versions"].items()}
    mismatched = {
        name: (version, installed.get(name))
        for name, version in pinned(LOCKS / "drift.lock").items()
        if installed.get(name) != version
    }
    assert not mismatched, f"run `make install`: {mismatched}"
    assert report["pydantic"].startswith("1.")
    assert Path(report["monitor"]).is_relative_to(REPO_ROOT / "optiloop" / "drift")


def test_the_api_models_cannot_load_in_the_drift_environment() -> None:
    """Why the isolation exists: the pydantic 2 models do not import next to pydantic 1."""
    if not DRIFT_PYTHON.exists():
        skip_or_fail(f"{DRIFT_PYTHON} does not exist: run `make install`")
    result = subprocess.run(
        [str(DRIFT_PYTHON), "-c", "import optiloop.api"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode != 0
    assert "pydantic" in result.stderr
