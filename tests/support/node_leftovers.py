"""What the test node could leave on the host, captured before and after, so a test can prove it left
nothing: mounts, the entries of the folders its components write (``/run``, ``/var/lib``,
``/var/log`` and a few fixed paths), network links and iptables rules in the host's namespace, and
processes."""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

WATCHED_FOLDERS = ("/run", "/var/lib", "/var/log")
"""Whose entries must be the same after the node as before (its components write under all three)."""
TOOLS_CACHE = Path(
    os.environ.get("OPTILOOP_TOOLS_DIR")
    or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "optiloop/tools"
)
"""The build caches (hack/build-*.sh): buildah mounts its build containers there while the images are
built, which may happen while a node runs; the node itself never mounts anything there."""
FIXED_PATHS = ("/opt/containerd", "/usr/libexec/kubernetes", "/etc/cni", "/etc/kubernetes", "/var/run/netns")
"""Default paths of containerd, the kubelet, the controller-manager and CNI outside the watched folders."""


@dataclass(frozen=True)
class HostState:
    mounts: frozenset[str]
    entries: frozenset[str]
    links: frozenset[str]
    iptables: tuple[str, ...]

    @classmethod
    def capture(cls) -> HostState:
        mounts = frozenset(
            point
            for point in (line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines())
            if not point.startswith(f"{TOOLS_CACHE}/")
        )
        entries = {f"{folder}/{name}" for folder in WATCHED_FOLDERS for name in os.listdir(folder)}
        entries |= {path for path in FIXED_PATHS if os.path.lexists(path)}
        links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True, check=True).stdout
        return cls(
            mounts=mounts,
            entries=frozenset(entries),
            links=frozenset(re.findall(r"^\d+: ([^:@]+)", links, flags=re.MULTILINE)),
            iptables=_iptables_rules(),
        )

    def differences(self, after: HostState) -> dict[str, list[str]]:
        """What appeared or disappeared between ``self`` and ``after``, by kind; empty when nothing."""
        found: dict[str, list[str]] = {}
        for kind in ("mounts", "entries", "links"):
            before_set, after_set = getattr(self, kind), getattr(after, kind)
            changed = [f"+{x}" for x in sorted(after_set - before_set)]
            changed += [f"-{x}" for x in sorted(before_set - after_set)]
            if changed:
                found[kind] = changed
        if self.iptables != after.iptables:
            found["iptables"] = sorted(set(after.iptables) ^ set(self.iptables))
        return found


def _iptables_rules() -> tuple[str, ...]:
    """The host's IPv4 rules without packet counters and comments (``iptables-save``)."""
    saved = subprocess.run(["iptables-save"], capture_output=True, text=True, check=True).stdout
    rules = []
    for line in saved.splitlines():
        if line.startswith("#"):
            continue
        rules.append(re.sub(r"\[\d+:\d+\]", "", line).strip())
    return tuple(rules)


def processes_using(paths: list[Path]) -> list[str]:
    """Processes whose command line names any of ``paths`` (the node's binaries or work folder)."""
    needles = [str(path) for path in paths]
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if any(needle in cmdline for needle in needles):
            found.append(f"{entry}: {cmdline.strip()}")
    return found
