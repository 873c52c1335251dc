"""What the host kernel sees of a pod on the test node: its processes and the users they run as."""

from __future__ import annotations

from pathlib import Path


def pod_processes(pod_uid: str) -> dict[str, int]:
    """``{command line: uid}`` of every process in the pod's cgroup, as the host kernel sees them
    (the sandbox's ``/pause`` included)."""
    found: dict[str, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if f"pod{pod_uid}" not in (entry / "cgroup").read_text():
                continue
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
            status = (entry / "status").read_text()
        except OSError:
            continue  # the process has exited
        uid = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("Uid:"))
        found[command] = uid
    return found
