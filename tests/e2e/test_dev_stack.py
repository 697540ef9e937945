"""The newcomer's path, end to end: ``invsaga dev`` brings the whole stack up, a checkout made with the
CLI is found in Temporal by its search attributes, the UI answers, and SIGTERM leaves nothing running."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest

from invsaga.dev.temporal import find_temporal_cli

pytestmark = pytest.mark.timeout(240)


def _invsaga(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "invsaga", *args], env=env, capture_output=True, text=True, timeout=120
    )


def _readme_python_snippet() -> str:
    """The README's "From Python" example, exactly as a newcomer would copy it."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("### From Python", 1)[1]
    return section.split("```python\n", 1)[1].split("```", 1)[0]


def _as_script(snippet: str) -> str:
    body = "".join(f"    {line}\n" for line in snippet.splitlines())
    return (
        "import asyncio, sys\n\nasync def main():\n" + body + "\nasyncio.run(main())\n"
        "print('store loaded:', any(m.split('.')[0] == 'sqlalchemy' for m in sys.modules))\n"
        # The SDK's native threads can abort the interpreter at exit (PyGILState_Release); the CLI and
        # the SDK's own tests end with os._exit for the same reason (see the README).
        "sys.stdout.flush(); import os; os._exit(0)\n"
    )


def test_dev_stack_serves_a_checkout_and_stops_cleanly(tmp_path: Path):
    data_dir = tmp_path / "data"
    env = {k: v for k, v in os.environ.items() if not k.startswith("INVSAGA_")}
    env["INVSAGA_DATA_DIR"] = str(data_dir)
    stack = subprocess.Popen(
        [sys.executable, "-m", "invsaga", "dev", "--shards", "2"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        printed = []
        assert stack.stdout is not None
        for line in stack.stdout:
            printed.append(line)
            if "Ctrl-C stops everything" in line:
                break
        else:
            pytest.fail("invsaga dev exited early:\n" + "".join(printed))
        assert "temporal_ui" in printed[1], "the Web UI URL must be printed first"
        stack_file = json.loads((data_dir / "stack.json").read_text())
        endpoints = stack_file["endpoints"]
        assert httpx.get(endpoints["temporal_ui"], timeout=10).status_code == 200
        assert httpx.get(endpoints["api"] + "/readyz", timeout=10).status_code == 200

        order_id = f"e2e-{int(time.time())}"
        done = _invsaga("checkout", "MUG-BLUE:2", "--customer", "e2e", "--order-id", order_id, env=env)
        assert done.returncode == 0, done.stderr
        assert "CONFIRMED" in done.stdout
        found = subprocess.run(
            [str(find_temporal_cli()), "workflow", "list", "--address", endpoints["temporal"], "-o", "json",
             "--query", f"OrderId = '{order_id}' AND CheckoutStatus = 'CONFIRMED'"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert found.returncode == 0, found.stderr
        assert f"checkout-{order_id}" in found.stdout
        readme = _readme_python_snippet().replace('"127.0.0.1:7233"', repr(endpoints["temporal"]))
        snippet = subprocess.run(
            [sys.executable, "-c", _as_script(readme)], env=env, capture_output=True, text=True, timeout=120
        )
        assert snippet.returncode == 0, snippet.stderr
        assert snippet.stdout.splitlines() == ["True CONFIRMED", "store loaded: False"]
        audit = _invsaga("audit", env=env)
        assert audit.returncode == 0, audit.stdout + audit.stderr
        children = psutil.Process(stack.pid).children(recursive=True)
        assert len(children) >= 4  # temporal, payments, worker, api (Postgres daemonizes via pg_ctl)
        pg_ports = [int(dsn.split(":")[2].split("/")[0]) for name, dsn in endpoints.items()
                    if name.startswith(("shard_", "core_db"))]  # fmt: skip
    finally:
        stack.send_signal(signal.SIGTERM)
        stack.wait(timeout=120)
    assert stack.returncode == 0
    time.sleep(1)
    still_running = [p for p in children if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert still_running == []
    for port in pg_ports:
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
    assert not (data_dir / "stack.json").exists()
