"""The real single-node cluster runs pods as a cluster does: the Node is Ready, a Service answers
through kube-proxy and by its DNS name, Jobs complete and retry as the Job controller says, and a
container over its memory limit is OOMKilled."""

from __future__ import annotations

import io
import json
import subprocess
import tarfile
import urllib.request
from pathlib import Path
from typing import Any

from tests.support.control_plane import wait_for
from tests.support.node import Node, node_binaries
from tests.support.node_config import BUSYBOX_IMAGE, CLUSTER_DOMAIN, NODE_IP, NODE_NAME


def _container(name: str, command: list[str], **extra: Any) -> dict[str, Any]:
    return {"name": name, "image": BUSYBOX_IMAGE, "imagePullPolicy": "Never", "command": command, **extra}


def _pod_spec(*containers: dict[str, Any], restart: str = "Never") -> dict[str, Any]:
    # A short grace period: the default 30 s would make every delete in the tier slow.
    return {
        "containers": list(containers),
        "restartPolicy": restart,
        "terminationGracePeriodSeconds": 1,
        "automountServiceAccountToken": False,
    }


def _job(name: str, command: list[str], backoff_limit: int = 0) -> dict[str, Any]:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {
            "backoffLimit": backoff_limit,
            "template": {"spec": _pod_spec(_container("main", command))},
        },
    }


def _create(api: Any, namespace: str, obj: dict[str, Any]) -> None:
    from kubernetes import utils

    utils.create_from_dict(api, obj, namespace=namespace)


def _job_condition(api: Any, namespace: str, name: str) -> str | None:
    """``Complete`` or ``Failed`` once the Job controller has decided, else ``None``."""
    from kubernetes import client

    status = client.BatchV1Api(api).read_namespaced_job_status(name, namespace).status
    for condition in status.conditions or []:
        if condition.type in ("Complete", "Failed") and condition.status == "True":
            return str(condition.type)
    return None


def _job_pods(api: Any, namespace: str, name: str) -> list[Any]:
    from kubernetes import client

    return list(client.CoreV1Api(api).list_namespaced_pod(namespace, label_selector=f"job-name={name}").items)


def _diagnostics(node: Node) -> str:
    return "\n".join(f"--- {name}\n{node.log_tail(name, 15)}" for name in ("kubelet", "containerd"))


def test_node_is_ready_with_its_address_and_version(node: Node, node_api: Any) -> None:
    from kubernetes import client

    found = client.CoreV1Api(node_api).read_node(NODE_NAME)
    ready = {c.type: c.status for c in found.status.conditions}
    assert ready["Ready"] == "True"
    assert {a.type: a.address for a in found.status.addresses}["InternalIP"] == NODE_IP
    assert found.status.node_info.kubelet_version == node.version == "v1.34.4"
    assert found.status.node_info.container_runtime_version.startswith("containerd://")


def test_service_answers_through_kube_proxy_and_by_dns_name(node: Node, node_api: Any, node_namespace: str) -> None:
    from kubernetes import client

    labels = {"app": "web"}
    serve = "echo hello-from-$(hostname) > /www/index.html && exec httpd -f -p 8080 -h /www"
    _create(
        node_api,
        node_namespace,
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "web"},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": _pod_spec(
                        _container(
                            "httpd",
                            ["sh", "-c", serve],
                            ports=[{"containerPort": 8080}],
                            readinessProbe={"tcpSocket": {"port": 8080}, "periodSeconds": 1},
                        ),
                        restart="Always",
                    ),
                },
            },
        },
    )
    _create(
        node_api,
        node_namespace,
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "web"},
            "spec": {"selector": labels, "ports": [{"port": 80, "targetPort": 8080}]},
        },
    )
    apps = client.AppsV1Api(node_api)
    wait_for(
        lambda: apps.read_namespaced_deployment_status("web", node_namespace).status.ready_replicas == 1,
        90,
        what=f"the web Deployment to be ready\n{_diagnostics(node)}",
    )
    cluster_ip = client.CoreV1Api(node_api).read_namespaced_service("web", node_namespace).spec.cluster_ip
    fqdn = f"web.{node_namespace}.svc.{CLUSTER_DOMAIN}"
    # Another pod resolves the Service's name (CoreDNS, reached through the kube-dns Service) and asks
    # the address it got and the ClusterIP (kube-proxy's rules). Busybox's nslookup has its own
    # resolver; its wget is given addresses and ports, because Debian's static busybox crashes in
    # glibc's resolver (and port lookup, and wget -T) whenever /etc/resolv.conf exists.
    # kube-proxy and CoreDNS follow the new endpoints within a second or two: the client retries
    # for up to 15 s or so, as any client of a fresh Service must.
    script = (
        "for i in $(seq 30); do "
        f"resolved=$(nslookup {fqdn} | sed -n 's/^Address: //p'); "
        f'[ -n "$resolved" ] && timeout 3 wget -qO- http://$resolved:80/ > /tmp/by-name '
        f"&& timeout 3 wget -qO- http://{cluster_ip}:80/ > /tmp/by-ip && break; sleep 0.5; done; "
        "echo resolved=$resolved; cat /tmp/by-name /tmp/by-ip"
    )
    _create(node_api, node_namespace, _job("client", ["sh", "-c", script]))
    outcome = wait_for(lambda: _job_condition(node_api, node_namespace, "client"), 90, what="the client Job to finish")
    (pod,) = _job_pods(node_api, node_namespace, "client")
    log = client.CoreV1Api(node_api).read_namespaced_pod_log(pod.metadata.name, node_namespace)
    assert outcome == "Complete", log
    assert f"resolved={cluster_ip}\n" in log
    assert log.count("hello-from-web-") == 2, log


def test_job_completes(node_api: Any, node_namespace: str) -> None:
    _create(node_api, node_namespace, _job("works", ["sh", "-c", "echo done"]))
    assert wait_for(lambda: _job_condition(node_api, node_namespace, "works"), 90, what="the Job") == "Complete"


def test_failing_job_retries_as_its_backoff_limit_says(node_api: Any, node_namespace: str) -> None:
    from kubernetes import client

    _create(node_api, node_namespace, _job("fails", ["sh", "-c", "exit 3"], backoff_limit=1))
    outcome = wait_for(lambda: _job_condition(node_api, node_namespace, "fails"), 120, what="the Job to fail")
    assert outcome == "Failed"
    job = client.BatchV1Api(node_api).read_namespaced_job_status("fails", node_namespace)
    (failed,) = [c for c in job.status.conditions if c.type == "Failed"]
    assert failed.reason == "BackoffLimitExceeded"
    assert job.status.failed == 2  # the first try and one retry
    pods = _job_pods(node_api, node_namespace, "fails")
    exit_codes = sorted(p.status.container_statuses[0].state.terminated.exit_code for p in pods)
    assert exit_codes == [3, 3]


def test_container_over_its_memory_limit_is_oom_killed(node: Node, node_api: Any, node_namespace: str) -> None:
    from kubernetes import client

    # dd fills a 64 MiB buffer; the limit is 16 MiB, so the kernel's OOM killer ends it.
    hog = _container(
        "hog",
        ["dd", "if=/dev/zero", "of=/dev/null", "bs=64M", "count=4"],
        resources={"limits": {"memory": "16Mi", "cpu": "500m"}},
    )
    _create(
        node_api,
        node_namespace,
        {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "hog"}, "spec": _pod_spec(hog)},
    )
    core = client.CoreV1Api(node_api)

    def failed() -> Any:
        status = core.read_namespaced_pod_status("hog", node_namespace).status
        return status.phase == "Failed" and status

    status = wait_for(failed, 90, what=f"the hog pod to fail\n{_diagnostics(node)}")
    state = status.container_statuses[0].state.terminated
    assert (state.reason, state.exit_code) == ("OOMKilled", 137)


def _docker_archive_from_oci(oci: Path, out: Path) -> Path:
    """The same image as a ``docker save`` archive (manifest.json, config, layers), named busybox:docker."""
    with tarfile.open(oci) as tar:
        files = {m.name.removeprefix("./"): tar.extractfile(m).read() for m in tar if m.isfile()}  # type: ignore[union-attr]

    def blob(descriptor: dict[str, str]) -> str:
        return "blobs/sha256/" + descriptor["digest"].removeprefix("sha256:")

    manifest = json.loads(files[blob(json.loads(files["index.json"])["manifests"][0])])
    config, layers = blob(manifest["config"]), [blob(layer) for layer in manifest["layers"]]
    docker = [{"Config": config, "RepoTags": ["busybox:docker"], "Layers": layers}]
    with tarfile.open(out, "w") as tar:
        for name, content in {
            "manifest.json": json.dumps(docker).encode(),
            **{n: files[n] for n in [config, *layers]},
        }.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    return out


def test_imported_oci_and_docker_archives_run_under_the_names_given(
    node: Node, node_api: Any, node_namespace: str, tmp_path: Path
) -> None:
    oci = node_binaries() / "busybox.oci.tar"
    node.import_image(oci, "optiloop.local/imported:oci")
    node.import_image(_docker_archive_from_oci(oci, tmp_path / "docker.tar"), "localhost/imported:docker")
    names = node.run_inside(["ctr", "-n", "k8s.io", "images", "ls", "-q"]).stdout.split()
    assert {"optiloop.local/imported:oci", "localhost/imported:docker"} <= set(names)
    # Only normalized names: one bad name would make containerd's CRI lose the image under all of them.
    assert [n for n in names if not (n.startswith("sha256:") or "/" in n.split(":")[0] or "." in n.split("/")[0])] == []
    for job, image in (("oci", "optiloop.local/imported:oci"), ("docker", "localhost/imported:docker")):
        spec = _job(job, ["sh", "-c", "echo ran"])
        spec["spec"]["template"]["spec"]["containers"][0]["image"] = image
        _create(node_api, node_namespace, spec)
    for job in ("oci", "docker"):
        assert (
            wait_for(lambda job=job: _job_condition(node_api, node_namespace, job), 90, what=f"Job {job}") == "Complete"
        )


def test_a_pod_reaches_the_api_server_through_the_kubernetes_service_with_its_token(
    node_api: Any, node_namespace: str
) -> None:
    from kubernetes import client

    # What an operator pod does: the kubernetes Service's address from its environment, its
    # ServiceAccount's token from the projected volume (busybox's TLS does not check certificates).
    script = (
        "token=$(cat /var/run/secrets/kubernetes.io/serviceaccount/token); "
        'wget -qO- --header "Authorization: Bearer $token" '
        "https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT/api"
    )
    job = _job("api", ["sh", "-c", script])
    job["spec"]["template"]["spec"]["automountServiceAccountToken"] = True
    _create(node_api, node_namespace, job)
    outcome = wait_for(lambda: _job_condition(node_api, node_namespace, "api"), 90, what="the api Job")
    (pod,) = _job_pods(node_api, node_namespace, "api")
    # Unparsed: the client would turn a JSON log into a Python dict's repr. wget notes first that it
    # does not check the certificate.
    raw = client.CoreV1Api(node_api).read_namespaced_pod_log(pod.metadata.name, node_namespace, _preload_content=False)
    log = raw.data.decode()
    assert outcome == "Complete", log
    answer = json.loads(log[log.index("{") :])
    assert answer["kind"] == "APIVersions"
    assert answer["serverAddressByClientCIDRs"][0]["serverAddress"] == f"{NODE_IP}:6443"


def test_a_file_one_job_writes_to_a_persistent_volume_is_read_by_the_next(node_api: Any, node_namespace: str) -> None:
    from kubernetes import client

    # A static hostPath PersistentVolume: its folder is inside the node's private /var/lib (tmpfs).
    volume = f"pv-{node_namespace}"
    _create(
        node_api,
        node_namespace,
        {
            "apiVersion": "v1",
            "kind": "PersistentVolume",
            "metadata": {"name": volume},
            "spec": {
                "capacity": {"storage": "10Mi"},
                "accessModes": ["ReadWriteOnce"],
                "persistentVolumeReclaimPolicy": "Retain",
                "storageClassName": "manual",
                "claimRef": {"namespace": node_namespace, "name": "artifacts"},
                "hostPath": {"path": f"/var/lib/optiloop-volumes/{volume}", "type": "DirectoryOrCreate"},
            },
        },
    )
    try:
        _create(
            node_api,
            node_namespace,
            {
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "metadata": {"name": "artifacts"},
                "spec": {
                    "accessModes": ["ReadWriteOnce"],
                    "storageClassName": "manual",
                    "resources": {"requests": {"storage": "10Mi"}},
                },
            },
        )
        # Jobs start once the claim is bound: a pod seen with an unbound claim waits for the scheduler's
        # next retry, minutes later on a quiet cluster.
        core = client.CoreV1Api(node_api)
        wait_for(
            lambda: core.read_namespaced_persistent_volume_claim("artifacts", node_namespace).status.phase == "Bound",
            60,
            what="the claim to bind",
        )
        for name, command in (("write", "echo model-r1 > /artifacts/model"), ("read", "cat /artifacts/model")):
            job = _job(name, ["sh", "-c", command])
            pod_spec = job["spec"]["template"]["spec"]
            pod_spec["volumes"] = [{"name": "artifacts", "persistentVolumeClaim": {"claimName": "artifacts"}}]
            pod_spec["containers"][0]["volumeMounts"] = [{"name": "artifacts", "mountPath": "/artifacts"}]
            _create(node_api, node_namespace, job)
            assert (
                wait_for(lambda name=name: _job_condition(node_api, node_namespace, name), 90, what=name) == "Complete"
            )
        (pod,) = _job_pods(node_api, node_namespace, "read")
        assert client.CoreV1Api(node_api).read_namespaced_pod_log(pod.metadata.name, node_namespace) == "model-r1\n"
    finally:
        client.CoreV1Api(node_api).delete_persistent_volume(volume)


def test_kubectl_exec_and_port_forward_reach_a_pod_from_the_host(
    node: Node, node_api: Any, node_namespace: str
) -> None:
    from kubernetes import client

    serve = "echo hello-through-the-api > /www/index.html && exec httpd -f -p 8080 -h /www"
    httpd = _container("httpd", ["sh", "-c", f"mkdir -p /www && {serve}"], readinessProbe={"tcpSocket": {"port": 8080}})
    _create(
        node_api,
        node_namespace,
        {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web"}, "spec": _pod_spec(httpd, restart="Always")},
    )
    core = client.CoreV1Api(node_api)
    wait_for(
        lambda: any(
            c.type == "Ready" and c.status == "True"
            for c in core.read_namespaced_pod_status("web", node_namespace).status.conditions or []
        ),
        90,
        what="the web pod to be Ready",
    )
    kubectl = [str(node_binaries() / "kubectl"), f"--kubeconfig={node.kubeconfig}", "-n", node_namespace]
    exec_out = subprocess.run(
        [*kubectl, "exec", "web", "--", "cat", "/www/index.html"], capture_output=True, text=True, timeout=60
    )
    assert exec_out.stdout == "hello-through-the-api\n", exec_out.stderr

    forward = subprocess.Popen([*kubectl, "port-forward", "pod/web", ":8080"], stdout=subprocess.PIPE, text=True)
    try:
        assert forward.stdout is not None
        line = forward.stdout.readline()  # "Forwarding from 127.0.0.1:<port> -> 8080"
        port = int(line.split("127.0.0.1:")[1].split()[0])
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as answer:
            assert answer.read() == b"hello-through-the-api\n"
    finally:
        forward.terminate()
        forward.wait(10)
