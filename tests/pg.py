"""A throw-away PostgreSQL server for the tests that share a study through a database.

`postgres_server` (session-scoped) starts a private cluster from the Debian `postgresql`
package's binaries: its own data directory in a temp folder, listening on 127.0.0.1 only on
a free port, its unix socket inside that folder. Host connections need the superuser's
password (scram-sha-256), so a wrong password is refused as it would be on a real server.
At the end the cluster is stopped (`-m immediate`: nothing in it is worth keeping) and the
folder deleted.

PostgreSQL refuses to run as root: as root, the server runs as the package's `postgres`
user (or a system user `cnnsearch-pg`, created when neither exists). When something is
missing, every test that uses the server is skipped with the reason, visible under `-ra`.
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

SUPERUSER = "cnnsearch"  # the cluster's superuser, the role the tests connect as
DATABASE = "cnnsearch"
SERVICE_USERS = ("postgres", "cnnsearch-pg")  # who runs the server when the tests run as root
START_TIMEOUT_S = 60


@dataclass(frozen=True)
class PostgresServer:
    host: str
    port: int
    user: str
    password: str
    database: str

    @property
    def url(self) -> str:
        return f"postgresql://{self.user}:{self.password}@{self.host}:{self.port}/{self.database}"

    def url_with_password(self, password: str) -> str:
        return f"postgresql://{self.user}:{password}@{self.host}:{self.port}/{self.database}"


class _Unavailable(Exception):
    """Why no server can be started here; becomes the skip reason."""


def find_binaries() -> Path:
    """The newest /usr/lib/postgresql/<version>/bin that has initdb, pg_ctl and postgres."""
    candidates = []
    for folder in Path("/usr/lib/postgresql").glob("*/bin"):
        if all((folder / tool).is_file() for tool in ("initdb", "pg_ctl", "postgres")):
            version = folder.parent.name
            candidates.append((int(version) if version.isdigit() else 0, folder))
    if not candidates:
        raise _Unavailable("no initdb/pg_ctl under /usr/lib/postgresql/*/bin (apt-get install postgresql)")
    return max(candidates)[1]


def service_user() -> str | None:
    """The unprivileged user that runs the server; None = the current user (not root)."""
    if os.geteuid() != 0:
        return None
    for name in SERVICE_USERS:
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            continue
    created = subprocess.run(
        ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", SERVICE_USERS[-1]],
        capture_output=True,
        text=True,
    )
    if created.returncode != 0:
        raise _Unavailable(
            f"running as root and cannot create the user {SERVICE_USERS[-1]!r}: {created.stderr.strip()}"
        )
    return SERVICE_USERS[-1]


def _as_user(user: str | None, command: list[str]) -> list[str]:
    if user is None:
        return command
    if shutil.which("runuser"):
        return ["runuser", "-u", user, "--", *command]
    import shlex

    return ["su", user, "-s", "/bin/sh", "-c", shlex.join(command)]


def _run(user: str | None, command: list[str], what: str) -> None:
    result = subprocess.run(_as_user(user, command), capture_output=True, text=True, timeout=START_TIMEOUT_S)
    if result.returncode != 0:
        detail = (result.stderr or result.stdout).strip().splitlines()
        raise _Unavailable(f"{what} failed: {detail[-1] if detail else f'exit {result.returncode}'}")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _private_folder(user: str | None) -> Path:
    """A temp folder the server's user owns; under /tmp, which every user can traverse."""
    base = tempfile.gettempdir() if user is None else "/tmp"
    folder = Path(tempfile.mkdtemp(prefix="cnnsearch-pg-", dir=base))
    if user is not None:
        entry = pwd.getpwnam(user)
        os.chown(folder, entry.pw_uid, entry.pw_gid)
    return folder


def start_server(folder: Path, binaries: Path, user: str | None) -> PostgresServer:
    password = secrets.token_hex(12)
    password_file = folder / "password"
    password_file.write_text(password + "\n")
    if user is not None:
        entry = pwd.getpwnam(user)
        os.chown(password_file, entry.pw_uid, entry.pw_gid)
    data = folder / "data"
    _run(
        user,
        [
            str(binaries / "initdb"),
            "-D",
            str(data),
            "-U",
            SUPERUSER,
            "-E",
            "UTF8",
            "--no-sync",
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            f"--pwfile={password_file}",
        ],
        "initdb",
    )
    port = free_port()
    # Durability is of no use in a throw-away cluster: fsync off makes every commit cheap.
    options = f"-h 127.0.0.1 -p {port} -k {folder} -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
    _run(
        user,
        [
            str(binaries / "pg_ctl"),
            "start",
            "-D",
            str(data),
            "-l",
            str(folder / "server.log"),
            "-w",
            "-t",
            str(START_TIMEOUT_S),
            "-o",
            options,
        ],
        "pg_ctl start",
    )
    createdb = binaries / "createdb"
    _run(user, [str(createdb), "-h", str(folder), "-p", str(port), "-U", SUPERUSER, DATABASE], "createdb")
    return PostgresServer(host="127.0.0.1", port=port, user=SUPERUSER, password=password, database=DATABASE)


def stop_server(folder: Path, binaries: Path, user: str | None) -> None:
    subprocess.run(
        _as_user(user, [str(binaries / "pg_ctl"), "stop", "-D", str(folder / "data"), "-m", "immediate", "-w"]),
        capture_output=True,
        timeout=START_TIMEOUT_S,
    )
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A running PostgreSQL for this test session, or a skip that says why there is none."""
    folder = None
    try:
        binaries = find_binaries()
        user = service_user()
        folder = _private_folder(user)
        server = start_server(folder, binaries, user)
    except (_Unavailable, OSError, subprocess.TimeoutExpired) as error:
        if folder is not None:
            stop_server(folder, binaries, user)
        pytest.skip(f"PostgreSQL tests skipped: {error}")
    try:
        yield server
    finally:
        stop_server(folder, binaries, user)
