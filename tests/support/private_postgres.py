"""A PostgreSQL server of the test's own, which a test may stop, kill and start again.

Built from the machine's server binaries (`/usr/lib/postgresql/*/bin`, or `pg_ctl` on the
PATH) on a free port, with its data in a fresh folder. Run as root (in CI containers), the
server runs as the `postgres` OS user (PostgreSQL refuses root) and its folder is a temp
folder owned by that user, since a test's own tmp_path is private to root.

    with PrivatePostgres(tmp_path / "pg") as postgres:
        engine = create_engine(postgres.url)
        postgres.stop()      # a clean shutdown (`pg_ctl stop -m fast`): connections drop
        postgres.start()     # back, same port, same data
        postgres.kill()      # SIGKILL the postmaster: a crash, recovered at the next start
        postgres.restart()

Durability is switched off (fsync, synchronous commit): the tests want a server that goes
away and comes back, not one that survives a power cut.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from tests.support.services import free_port, service_unavailable, wait_for

DATABASE = "oceanstream"
_USER = "postgres"


def server_binaries() -> Path | None:
    """The folder of `initdb` and `pg_ctl`, newest major version first; None if absent."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=_major, reverse=True)
    if found:
        return Path(found[0]).parent
    on_path = shutil.which("pg_ctl")
    return Path(on_path).parent if on_path else None


def _major(path: str) -> int:
    version = Path(path).parts[-3]
    return int(version) if version.isdigit() else 0


class PrivatePostgres:
    """One PostgreSQL server on a free port (see the module doc)."""

    def __init__(self, workdir: Path | None = None, port: int | None = None) -> None:
        binaries = server_binaries()
        if binaries is None:
            service_unavailable("the PostgreSQL server binaries (initdb, pg_ctl) are not installed")
        assert binaries is not None
        self.binaries = binaries
        self.port = port or free_port()
        self._as_root = os.geteuid() == 0
        if self._as_root:
            self.root = Path(tempfile.mkdtemp(prefix="oceanstream-pg-"))
            owner = pwd.getpwnam(_USER)
            os.chown(self.root, owner.pw_uid, owner.pw_gid)
        else:
            self.root = Path(workdir or tempfile.mkdtemp(prefix="oceanstream-pg-"))
            self.root.mkdir(parents=True, exist_ok=True)
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self._initialised = False
        self._killed = False

    @property
    def url(self) -> str:
        """The test database's URL (user `postgres`, no password: trust on 127.0.0.1)."""
        return f"postgresql+psycopg://{_USER}@127.0.0.1:{self.port}/{DATABASE}"

    def start(self, timeout: float = 60) -> None:
        """Start the server (creating its cluster and database the first time); waits for it."""
        if not self._initialised:
            self._run("initdb", "-D", str(self.data), "-U", _USER, "-A", "trust", "--no-sync")
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.root} "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        )
        deadline = time.monotonic() + (10 if self._killed else 0)
        while True:
            try:
                self._run(
                    "pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", options,
                    "-w", "-t", str(int(timeout)), "start",
                )  # fmt: skip
                break
            except subprocess.CalledProcessError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        self._killed = False
        wait_for(self.ready, timeout, "PostgreSQL to accept connections")
        if not self._initialised:
            self._run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", _USER, DATABASE)
            self._initialised = True

    def stop(self, mode: str = "fast") -> None:
        """Shut the server down (`fast`: clients are disconnected; `immediate`: no checkpoint)."""
        if self.running():
            self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")

    def kill(self) -> None:
        """SIGKILL the postmaster, as a crash would; its children exit on their own."""
        pid = self._postmaster_pid()
        if pid is not None:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                return
            wait_for(lambda: not self.ready(), 30, "PostgreSQL to go away")
            # Its backends notice the postmaster is gone and exit; a start before they have
            # is refused (shared memory still in use), so `start` tries again for a while.
            self._killed = True

    def restart(self) -> None:
        self.stop()
        self.start()

    def running(self) -> bool:
        pid = self._postmaster_pid()
        return pid is not None and _alive(pid)

    def ready(self) -> bool:
        done = subprocess.run(
            [str(self.binaries / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port), "-t", "1"],
            capture_output=True,
        )
        return done.returncode == 0

    def close(self) -> None:
        """Stop the server at once and remove its folder."""
        try:
            self.stop("immediate")
        except subprocess.CalledProcessError:
            self.kill()
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> PrivatePostgres:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _postmaster_pid(self) -> int | None:
        try:
            first = (self.data / "postmaster.pid").read_text().split("\n", 1)[0]
        except (FileNotFoundError, PermissionError):
            return None
        return int(first) if first.strip().isdigit() else None

    def _run(self, tool: str, *args: str) -> None:
        command = [str(self.binaries / tool), *args]
        if self._as_root:
            command = ["runuser", "-u", _USER, "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, cwd=self.root)
        if done.returncode != 0:
            log = self.log.read_text()[-2000:] if self.log.exists() else ""
            raise subprocess.CalledProcessError(
                done.returncode, command, done.stdout, f"{done.stderr}\n{log}"
            )


def _alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie, left unreaped by a container's init, does not)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return False
    return fields[0] != "Z"
