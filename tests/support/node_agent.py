"""A node agent for the closed-loop test: it plays kubelet, the Job controller and KServe with
real processes on this machine.

* A Job the operator creates runs as a local process: the pod's command with the pod's
  environment (``OPTILOOP_STAGE_INPUT``...), the artifact claim mapped to a local folder, the
  termination message read from the file the stage writes; then the Job is reported finished
  the way the Job controller would (:meth:`StandIn.finish_job`).
* An InferenceService gets one optiloop predictor process per served revision, loaded from the
  storage URI; a router on loopback splits traffic between the stable revision and a canary
  (``canaryTrafficPercent``), and, as KServe's payload logger does, posts every request to the
  drift monitor as a CloudEvent. The InferenceService is marked Ready with the router's URL.
* The drift monitor's Deployment runs from the drift environment on a fixed port (Prometheus
  scrapes it there), restarted when the served revision changes.
"""

from __future__ import annotations

import http.server
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from tests.support.control_plane import ControlPlane, _die_with_parent, free_port, wait_for
from tests.support.operator import Finish, StandIn

REPO_ROOT = Path(__file__).resolve().parents[2]


def drift_python() -> str:
    """The drift environment's interpreter (``$OPTILOOP_DRIFT_PYTHON`` or ``.venv-drift``)."""
    return os.environ.get("OPTILOOP_DRIFT_PYTHON") or str(REPO_ROOT / ".venv-drift" / "bin" / "python")


@dataclass
class Process:
    popen: subprocess.Popen[bytes]
    log: Path

    def terminate(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(15)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


def spawn(argv: list[str], log: Path, env: dict[str, str] | None = None, cwd: Path | None = None) -> Process:
    with log.open("wb") as out:
        popen = subprocess.Popen(
            argv,
            env=env,
            cwd=cwd,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            preexec_fn=_die_with_parent,
        )
    return Process(popen, log)


@dataclass
class Predictor:
    revision: int
    port: int
    process: Process
    in_flight: int = 0
    """Requests routed to it and not yet answered (changed under the agent's route lock)."""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@dataclass
class Timeline:
    """When the agent first saw things happen (monotonic seconds), for the test's report."""

    marks: dict[str, float] = field(default_factory=dict)

    def mark(self, what: str) -> None:
        self.marks.setdefault(what, time.monotonic())


class NodeAgent(StandIn):
    """Runs the operator's children of one namespace as local processes (see the module docstring)."""

    def __init__(self, plane: ControlPlane, namespace: str, workdir: Path, drift_port: int) -> None:
        super().__init__(plane, namespace)
        self.workdir = workdir
        self.pvc_root = workdir / "pvc"
        self.pvc_root.mkdir(parents=True, exist_ok=True)
        self.drift_port = drift_port
        self.targets_file = workdir / "predictor-targets.json"
        self.targets_file.write_text("[]")
        self.timeline = Timeline()
        self.running: dict[str, tuple[dict[str, Any], Process, Path]] = {}
        self.predictors: dict[int, Predictor] = {}
        self.stable: int | None = None
        self.canary: tuple[int, int] | None = None  # (revision, percent)
        self.monitor: tuple[int, Process] | None = None
        self.monitor_ready = threading.Event()
        self.requests_logged = 0
        self.inference_service = ""
        self.logger_paths: dict[int, str] = {}
        """Each revision's payload-logger path, from the spec it was served with (as each Knative
        revision's agent keeps the logger URL of its own spec)."""
        self._route_lock = threading.Lock()
        self.router = http.server.ThreadingHTTPServer(("127.0.0.1", 0), self._router_handler())
        self.router_url = f"http://127.0.0.1:{self.router.server_address[1]}"
        threading.Thread(target=self.router.serve_forever, daemon=True).start()

    # --- jobs -------------------------------------------------------------------

    def step(self) -> None:
        jobs = {
            j.metadata.uid: self.api.sanitize_for_serialization(j)
            for j in self.batch.list_namespaced_job(self.namespace).items
        }
        for uid, job in jobs.items():
            if uid in self.running or uid in self.finished or (job.get("status") or {}).get("conditions"):
                continue
            self.start_job(job)
        for uid in list(self.running):
            job, process, result = self.running[uid]
            if uid not in jobs:  # deleted (superseded): its pod goes with it
                process.terminate()
                del self.running[uid]
            elif process.popen.poll() is not None:
                del self.running[uid]
                self.finished.add(uid)
                self.report(job, process, result)
        self.serve()
        self.run_monitor()

    def start_job(self, job: dict[str, Any]) -> None:
        container = job["spec"]["template"]["spec"]["containers"][0]
        name = job["metadata"]["name"]
        result = self.workdir / f"{name}.termination-log"
        env = {**os.environ, "OPTILOOP_THREADS": "1", "HOME": str(self.workdir)}
        for var in container.get("env", []):
            if "value" in var:
                env[var["name"]] = var["value"]
        env["OPTILOOP_PVC_ROOT"] = str(self.pvc_root)
        env["OPTILOOP_RESULT_FILE"] = str(result)
        command = [sys.executable if part == "python" else part for part in container["command"]]
        process = spawn(command, self.workdir / f"{name}.log", env, self.workdir)
        self.running[job["metadata"]["uid"]] = (job, process, result)
        self.timeline.mark(f"job {name} started")

    def report(self, job: dict[str, Any], process: Process, result: Path) -> None:
        outcome = json.loads(result.read_text()) if result.exists() else None
        code = process.popen.returncode
        name = job["metadata"]["name"]
        if code == 0:
            self.finish_job(job, Finish(True, outcome))
        else:
            if outcome is None:
                outcome = {"stage": "tuning", "succeeded": False, "reason": "StageFailed", "message": process.tail(5)}
            self.finish_job(job, Finish(False, outcome, "BackoffLimitExceeded", f"exit code {code}"))
        self.timeline.mark(f"job {name} finished")

    # --- serving ------------------------------------------------------------------

    def local_path(self, uri: str) -> Path:
        assert uri.startswith("pvc://"), uri
        return self.pvc_root / uri.removeprefix("pvc://")

    def serve(self) -> None:
        items = self.custom.list_namespaced_custom_object(
            "serving.kserve.io", "v1beta1", self.namespace, "inferenceservices"
        )["items"]
        if not items:
            self._stop_predictors(keep=set())
            self.stable, self.canary = None, None
            return
        isvc = items[0]
        meta, predictor = isvc["metadata"], isvc["spec"]["predictor"]
        self.inference_service = meta["name"]
        if (isvc.get("status") or {}).get("observedGeneration") == meta["generation"]:
            return
        revision = int(meta["labels"]["optiloop.dev/revision"])
        if "logger" in predictor:
            self.logger_paths[revision] = urlsplit(predictor["logger"]["url"]).path or "/"
        env = {e["name"]: e.get("value") for e in predictor["containers"][0].get("env", [])}
        self._ensure_predictor(revision, self.local_path(env["STORAGE_URI"]))
        percent = predictor.get("canaryTrafficPercent")
        with self._route_lock:
            if percent is not None and self.stable is not None and self.stable != revision:
                self.canary = (revision, int(percent))
                self.timeline.mark(f"canary r{revision}")
            else:
                self.stable, self.canary = revision, None
                self.timeline.mark(f"serving r{revision}")
            keep = {self.stable} | ({self.canary[0]} if self.canary else set())
        self._stop_predictors(keep={r for r in keep if r is not None})
        self.custom.patch_namespaced_custom_object_status(
            "serving.kserve.io", "v1beta1", self.namespace, "inferenceservices", meta["name"],
            {"status": {"observedGeneration": meta["generation"], "url": self.router_url,
                        "conditions": [{"type": "Ready", "status": "True"}]}},
        )  # fmt: skip

    def _ensure_predictor(self, revision: int, model_dir: Path) -> None:
        if revision in self.predictors:
            return
        port = free_port()
        argv = [sys.executable, "-m", "optiloop.serve", "--model-dir", str(model_dir), "--model-name", "iris",
                "--host", "127.0.0.1", "--http-port", str(port)]  # fmt: skip
        process = spawn(argv, self.workdir / f"predictor-r{revision}.log", {**os.environ, "OPTILOOP_THREADS": "1"})
        predictor = Predictor(revision, port, process)
        wait_for(lambda: self._ready(predictor), 120, interval=0.2, what=f"predictor r{revision} ({process.log})")
        self.predictors[revision] = predictor
        self._write_targets()

    @staticmethod
    def _ready(predictor: Predictor) -> bool:
        if predictor.process.popen.poll() is not None:
            raise RuntimeError(f"predictor r{predictor.revision} exited:\n{predictor.process.tail()}")
        with urllib.request.urlopen(f"{predictor.url}/v1/models/iris", timeout=2) as response:
            return bool(json.load(response).get("ready"))

    def _stop_predictors(self, keep: set[int]) -> None:
        """Stop the predictors of revisions no longer routed to once their requests are answered,
        as a pod's endpoint leaves its Service before the pod is terminated."""
        for revision in [r for r in self.predictors if r not in keep]:
            with self._route_lock:
                predictor = self.predictors.pop(revision)
            self._write_targets()

            def drained(predictor: Predictor = predictor) -> bool:
                with self._route_lock:
                    return predictor.in_flight == 0

            wait_for(drained, 30, interval=0.05, what=f"predictor r{revision}'s requests to be answered")
            predictor.process.terminate()

    def _write_targets(self) -> None:
        """Prometheus' file-based discovery of the predictors, labelled as in a cluster."""
        targets = [
            {"targets": [f"127.0.0.1:{p.port}"], "labels": {"namespace": self.namespace}}
            for p in self.predictors.values()
        ]
        tmp = self.targets_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(targets))
        tmp.replace(self.targets_file)

    def choose(self) -> Predictor:
        with self._route_lock:
            revision = self.stable
            if self.canary is not None and random.uniform(0, 100) < self.canary[1]:
                revision = self.canary[0]
            assert revision is not None, "nothing is served"
            predictor = self.predictors[revision]
            predictor.in_flight += 1
            return predictor

    def answered(self, predictor: Predictor) -> None:
        with self._route_lock:
            predictor.in_flight -= 1

    def _router_handler(self) -> type[http.server.BaseHTTPRequestHandler]:
        agent = self

        class Router(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                backend = agent.choose()
                request = urllib.request.Request(
                    f"{backend.url}{self.path}", data=body, headers={"Content-Type": "application/json"}
                )
                try:
                    with urllib.request.urlopen(request, timeout=30) as response:
                        status, answer = response.status, response.read()
                except urllib.error.HTTPError as exc:
                    status, answer = exc.code, exc.read()
                finally:
                    agent.answered(backend)
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.send_header("X-Revision", str(backend.revision))
                self.end_headers()
                self.wfile.write(answer)
                agent.log_payload(body, backend.revision)

            def log_message(self, *args: Any) -> None:
                pass

        return Router

    def log_payload(self, body: bytes, revision: int) -> None:
        """Post the request to the drift monitor as a binary-mode CloudEvent, as KServe's logger
        does: to the path of the logger URL that ``revision``'s spec named, none without one."""
        path = self.logger_paths.get(revision)
        if path is None or self.monitor is None or not self.monitor_ready.is_set():
            return
        headers = {
            "Content-Type": "application/json",
            "ce-specversion": "1.0",
            "ce-id": str(uuid.uuid4()),
            "ce-source": "http://localhost:9081/",
            "ce-type": "org.kubeflow.serving.inference.request",
            "ce-inferenceservicename": self.inference_service,
            "ce-namespace": self.namespace,
            "ce-component": "predictor",
        }
        request = urllib.request.Request(f"http://127.0.0.1:{self.drift_port}{path}", data=body, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=10):
                self.requests_logged += 1
        except (urllib.error.URLError, OSError):
            pass  # best effort, as KServe's logger is

    # --- drift monitor ----------------------------------------------------------------

    def run_monitor(self) -> None:
        deployments = self.apps.list_namespaced_deployment(self.namespace).items
        if not deployments:
            if self.monitor is not None:
                self.monitor[1].terminate()
                self.monitor = None
            return
        deployment = self.api.sanitize_for_serialization(deployments[0])
        revision = int(deployment["metadata"]["labels"]["optiloop.dev/revision"])
        if self.monitor is not None and self.monitor[0] == revision:
            return
        if self.monitor is not None:
            self.monitor[1].terminate()
        self.monitor_ready.clear()
        args = list(deployment["spec"]["template"]["spec"]["containers"][0]["args"])
        model_dir = args[args.index("--model-dir") + 1]
        args[args.index("--model-dir") + 1] = str(self.pvc_root / model_dir.removeprefix("/mnt/pvc/"))
        args[args.index("--port") + 1] = str(self.drift_port)
        log = self.workdir / f"drift-r{revision}.log"
        process = spawn([drift_python(), "-m", "optiloop.drift", *args, "--host", "127.0.0.1"], log)
        self.monitor = (revision, process)

        def ready() -> bool:
            if process.popen.poll() is not None:
                raise RuntimeError(f"the drift monitor exited:\n{process.tail()}")
            with urllib.request.urlopen(f"http://127.0.0.1:{self.drift_port}/readyz", timeout=2) as response:
                return response.status == 200

        def wait_ready() -> None:
            # Importing Alibi Detect takes about 20 s; Jobs and traffic go on meanwhile.
            try:
                wait_for(ready, 180, interval=0.5, what=f"the drift monitor for r{revision} ({log})")
            except (TimeoutError, RuntimeError) as exc:
                self.errors.append(str(exc))
                return
            self.timeline.mark(f"monitor r{revision} ready")
            self.monitor_ready.set()

        threading.Thread(target=wait_ready, daemon=True).start()

    def shutdown(self) -> None:
        """Stop the loop and every process it started."""
        self.__exit__()
        for _, process, _ in self.running.values():
            process.terminate()
        self._stop_predictors(keep=set())
        if self.monitor is not None:
            self.monitor[1].terminate()
        self.router.shutdown()
