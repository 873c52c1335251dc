"""A throwaway PostgreSQL server on loopback (Debian's package), for tests and benchmarks."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

from tests.support.control_plane import free_port, wait_for


def postgres_bin() -> Path | None:
    """Folder with initdb and postgres, or None when PostgreSQL's server is not installed."""
    for candidate in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (candidate / "initdb").exists():
            return candidate
    found = shutil.which("initdb")
    return Path(found).parent if found else None


@contextlib.contextmanager
def running_postgres() -> Iterator[str]:
    """Start a server with trust auth on a free loopback port; yield its SQLAlchemy URL; remove it after."""
    bin_dir = postgres_bin()
    if bin_dir is None:
        raise RuntimeError("PostgreSQL's server is not installed (make install installs Debian's postgresql)")
    # Not under pytest's tmp_path: its parents are private to root, and initdb refuses to run as root.
    data = Path(tempfile.mkdtemp(prefix="optiloop-postgres-"))
    run_as: list[str] = []
    if os.geteuid() == 0:
        shutil.chown(data, "postgres", "postgres")
        run_as = ["runuser", "-u", "postgres", "--"]
    port = free_port()
    server: subprocess.Popen[bytes] | None = None
    try:
        subprocess.run(
            [*run_as, str(bin_dir / "initdb"), "-D", str(data), "-U", "optiloop", "--auth=trust", "-E", "UTF8"],
            check=True,
            capture_output=True,
        )
        listen = ["-h", "127.0.0.1", "-p", str(port), "-k", str(data)]
        server = subprocess.Popen(
            [*run_as, str(bin_dir / "postgres"), "-D", str(data), *listen, "-F"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        import psycopg

        dsn = f"postgresql://optiloop@127.0.0.1:{port}/postgres"
        wait_for(lambda: psycopg.connect(dsn).close() or True, 30, what="PostgreSQL")
        yield f"postgresql+psycopg://optiloop@127.0.0.1:{port}/postgres"
    finally:
        if server is not None:
            server.terminate()
            server.wait(30)
        shutil.rmtree(data, ignore_errors=True)
