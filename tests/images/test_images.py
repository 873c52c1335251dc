"""The four images hack/build-images.sh builds from the Dockerfile (with buildah, on a base made from
Debian) start their entry points as user 65532 from their own read-only root filesystem, carry the
configuration the Dockerfile declares, and hold no CUDA library, compiler or pip cache they do not
need. They are unpacked layer by layer from the archive containerd imports and run with chroot in
private namespaces: no Docker engine."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from tests.conftest import skip_or_fail
from tests.support.control_plane import _die_with_parent, free_port, wait_for
from tests.support.images import BUILD_SCRIPT, TARGETS, ImagesMissingError, UnpackedImage, built_image, unpack
from tests.support.manifests import REPO_ROOT

DOCKERFILE = (REPO_ROOT / "Dockerfile").read_text()

# What the code of each image needs at run time (checked in its unpacked root filesystem):
# torch from PyPI is the CUDA build and loads its nvidia-* libraries at import, so the jobs and the
# drift images (torch for training, and for the MMD detector) carry them; the others carry none.
NEEDS_TORCH = {"operator": False, "jobs": True, "serve": False, "drift": True}
CUDA_LIBRARY = re.compile(
    r"lib(cuda|cudart|cublas|cublasLt|cudnn|cufft|curand|cusolver|cusparse|nccl|nvrtc|nvJitLink|nvshmem|cufile)[\w.-]*\.so"
)
COMPILERS = ("gcc", "cc", "g++", "c++", "clang", "x86_64-linux-gnu-gcc", "ptxas")


def final_stage(target: str) -> str:
    """The Dockerfile's stage named ``target``, continuation lines joined."""
    joined = re.sub(r"\\\n\s*", " ", DOCKERFILE)
    match = re.search(rf"^FROM \S+ AS {target}\n(.*?)(?=^FROM |\Z)", joined, re.M | re.S)
    assert match is not None, f"the Dockerfile has no `{target}` target"
    return match.group(1)


def instruction(stage: str, name: str) -> str | None:
    found = re.findall(rf"^{name} (.+)$", stage, re.M)
    return found[-1].strip() if found else None


@pytest.fixture(scope="module", params=TARGETS)
def image(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[UnpackedImage]:
    """Each target's image, unpacked once for the tests of this module and removed after them."""
    target = str(request.param)
    try:
        built = built_image(target)
    except ImagesMissingError as missing:
        skip_or_fail(f"the {target} image is not built: {missing}")
    workdir = tmp_path_factory.mktemp(f"image-{target}")
    try:
        yield unpack(built, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def target_of(image: UnpackedImage) -> str:
    return image.name.split("/")[-1].split(":")[0]


def test_the_image_is_named_for_its_target_and_inputs(image: UnpackedImage) -> None:
    assert re.fullmatch(r"optiloop/(operator|jobs|serve|drift):[0-9a-f]{12}", image.name)


def test_its_configuration_is_what_the_dockerfile_declares(image: UnpackedImage) -> None:
    target = target_of(image)
    stage = final_stage(target)
    config = image.config
    assert config["User"] == instruction(stage, "USER") == "65532:65532"
    assert (image.process["user"]["uid"], image.process["user"]["gid"]) == (65532, 65532)
    entrypoint = instruction(stage, "ENTRYPOINT")
    assert (config.get("Entrypoint") or None) == (json.loads(entrypoint) if entrypoint else None)
    assert config.get("Cmd") == json.loads(instruction(stage, "CMD") or "null")
    exposed = (instruction(stage, "EXPOSE") or "").split()
    assert sorted(config.get("ExposedPorts") or {}) == sorted(f"{port}/tcp" for port in exposed)
    healthcheck = instruction(stage, "HEALTHCHECK")
    if healthcheck is None:
        assert not config.get("Healthcheck"), f"{target}: a healthcheck the Dockerfile does not declare"
    else:
        command = healthcheck.split(" CMD ", 1)[1]
        assert config["Healthcheck"]["Test"] == ["CMD-SHELL", command]
        assert config["Healthcheck"]["Interval"] == 30 * 10**9
    assert "PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" in config["Env"]
    assert "PIP_NO_CACHE_DIR=1" in config["Env"]


def test_it_runs_as_the_non_root_user_on_a_read_only_root(image: UnpackedImage) -> None:
    probe = "import os, pathlib; print(os.getuid(), os.getgid()); pathlib.Path('/opt/venv/x').touch()"
    run = subprocess.run(image.command(["python", "-c", probe]), capture_output=True, text=True, timeout=120)
    assert run.stdout.split() == ["65532", "65532"]
    assert "Read-only file system" in run.stderr


def test_it_holds_no_cuda_library_compiler_or_pip_cache_it_does_not_need(image: UnpackedImage) -> None:
    target = target_of(image)
    root = image.rootfs
    cuda = sorted(str(path.relative_to(root)) for path in root.rglob("*.so*") if CUDA_LIBRARY.match(path.name))
    site = root / "opt/venv/lib/python3.11/site-packages"
    if NEEDS_TORCH[target]:
        # What is left, and why: torch's own CUDA libraries (it loads them at import), nothing else.
        assert cuda, f"{target}: torch without its CUDA libraries cannot import"
        assert all(path.startswith("opt/venv/lib/python3.11/site-packages/nvidia/") for path in cuda), cuda
        assert not (site / "triton").exists(), f"{target}: Triton (a GPU kernel compiler) is not needed"
    else:
        assert cuda == [], f"{target} needs no CUDA, yet carries {cuda[:5]}"
        assert not (site / "torch").exists()
        assert not (site / "nvidia").exists()
    for directory in ("usr/bin", "usr/local/bin", "opt/venv/bin"):
        found = [name for name in COMPILERS if (root / directory / name).exists()]
        assert found == [], f"{target}: compilers in /{directory}: {found}"
    assert not (root / "root/.cache/pip").exists()
    assert list((root / "tmp").iterdir()) == [], f"{target}: build leftovers in /tmp"


def test_its_entry_point_starts(image: UnpackedImage, tmp_path: Path) -> None:
    target = target_of(image)
    if target == "operator":
        args = image.entry(["operator", "--help"])
        run = subprocess.run(image.command(args), capture_output=True, text=True, timeout=300)
        assert run.returncode == 0, run.stderr[-2000:]
        assert "usage:" in run.stdout
    elif target == "jobs":
        # The image's own CMD (the tuning Job's help) and the compression Job's entry point.
        for args in (image.entry(), ["python", "-m", "optiloop.jobs.compress", "--help"]):
            run = subprocess.run(image.command(args), capture_output=True, text=True, timeout=300)
            assert run.returncode == 0, f"{args}: {run.stderr[-2000:]}"
            assert "usage:" in run.stdout
    else:
        serve_model_directory(image, target, tmp_path)


def serve_model_directory(image: UnpackedImage, target: str, tmp_path: Path) -> None:
    """Start the server with the image's own arguments (its model directory mounted where the CMD
    expects it), on a loopback port, and ask its probes."""
    from tests.support.model_dirs import city_model, write_model_directory

    model_dir = write_model_directory(tmp_path / "model", city_model(), name="city")
    cmd = list(image.config["Cmd"])
    mount = cmd[cmd.index("--model-dir") + 1]
    port = free_port()
    port_flag = "--http-port" if target == "serve" else "--port"
    probes = ["/v2/health/live", "/v2/health/ready"] if target == "serve" else ["/healthz", "/readyz"]
    log = tmp_path / "server.log"
    args = image.entry([*cmd, "--host", "127.0.0.1", port_flag, str(port)])
    with log.open("wb") as output:
        process = subprocess.Popen(
            image.command(args, {model_dir: mount}),
            stdout=output,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent,
        )
    try:
        for probe in probes:
            url = f"http://127.0.0.1:{port}{probe}"

            def answers_or_exited(url: str = url) -> bool:
                if process.poll() is not None:
                    return True
                with urllib.request.urlopen(url, timeout=5) as response:
                    return bool(response.status == 200)

            wait_for(answers_or_exited, timeout=240, interval=0.5, what=f"{target} to answer {probe}")
            assert process.poll() is None, f"{target} exited: {log.read_text()[-3000:]}"
    finally:
        try:
            server = [child.pid for child in psutil.Process(process.pid).children(recursive=True)]
        except psutil.Error:
            server = []
        # unshare ignores SIGTERM while it waits for its child; killing it kills the child with it
        # (--kill-child) and so the whole PID namespace.
        process.kill()
        process.wait(timeout=60)
        # Nothing of the image may outlive the test (a server once did, as the image's user).
        wait_for(lambda: not any(psutil.pid_exists(pid) for pid in server), 30, interval=0.2,
                 what=f"the {target} image's processes {server} to end")  # fmt: skip


def test_the_build_script_hashes_what_each_target_copies() -> None:
    """A change to anything a target's stages COPY must change its image's name, so the script's
    input list for each target must be the Dockerfile's COPY sources for it (plus the Dockerfile)."""
    script = BUILD_SCRIPT.read_text()
    for target in TARGETS:
        code_stage = "drift-code" if target == "drift" else "code"
        copied = set()
        for stage in (code_stage, f"{target}-deps", target):
            for sources in re.findall(r"^COPY (?!--from)(.+) \S+$", final_stage(stage), re.M):
                copied.update(sources.split())
        case = re.search(rf"^\s+{'drift' if target == 'drift' else '[*]'}\) echo \"([^\"]+)\"", script, re.M)
        assert case is not None, f"no input list for {target} in {BUILD_SCRIPT.name}"
        listed = set(case.group(1).replace("$1.lock", f"{target}.lock").split())
        assert listed == copied | {"Dockerfile", ".dockerignore"}, target


def test_docker_build_keeps_a_pinned_slim_default_base() -> None:
    """`docker build` without build arguments still works: PYTHON_IMAGE defaults to a pinned slim Python 3.11."""
    base = re.search(r"^ARG PYTHON_IMAGE=(\S+)$", DOCKERFILE, re.M)
    assert base is not None
    assert re.fullmatch(r"python:3\.11\.\d+-slim-bookworm(@sha256:[0-9a-f]{64})?", base.group(1))
