"""The `optiloop` command: validate and crd behave as documented, with exit codes and field paths."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from optiloop import __version__
from optiloop.cli import main
from tests.support.manifests import EXAMPLES, MALFORMED, REPO_ROOT


def test_validate_accepts_every_example(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", *map(str, EXAMPLES)]) == 0
    out = capsys.readouterr().out
    assert out.count("is valid") == len(EXAMPLES)


def test_validate_names_file_and_field_and_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(MALFORMED[4].manifest()))
    assert main(["validate", str(bad)]) == 2
    err = capsys.readouterr().err
    assert f"{bad}: spec.tuning.maxTrials: maxTrials must be at least parallelTrials" in err


def test_validate_reports_every_document_of_a_multi_document_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    both = tmp_path / "both.yaml"
    both.write_text(yaml.safe_dump_all([MALFORMED[0].manifest(), yaml.safe_load(EXAMPLES[0].read_text())]))
    assert main(["validate", str(both)]) == 2
    captured = capsys.readouterr()
    assert "(document 1): spec.tuning.maxTrials" in captured.err
    assert "(document 2): ModelOptimization" in captured.out


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "file not found"),
        ("a: [unclosed", "not valid YAML"),
        ("", "holds no YAML document"),
        (b"\xff\xfe\x00", "cannot read"),
    ],
)
def test_validate_explains_unreadable_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: object, message: str
) -> None:
    path = tmp_path / "manifest.yaml"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif isinstance(content, str):
        path.write_text(content)
    assert main(["validate", str(path)]) == 2
    assert message in capsys.readouterr().err


def test_crd_prints_the_rendered_crd(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["crd"]) == 0
    assert capsys.readouterr().out == (REPO_ROOT / "crds" / "modeloptimization.yaml").read_text()


def test_console_script_runs_with_version() -> None:
    result = subprocess.run(
        [str(Path(sys.executable).parent / "optiloop"), "--version"], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == f"optiloop {__version__}"


def test_module_crd_check_passes_on_the_committed_file() -> None:
    result = subprocess.run([sys.executable, "-m", "optiloop.api.crd", "--check"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
