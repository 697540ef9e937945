"""The newcomer's path, end to end: ``invsaga dev`` brings the whole stack up, the README's shop story
runs with a webhook hearing every step, a checkout made with the CLI is found in Temporal by its search
attributes, its history is encrypted and the UI's codec server
decodes it, the UI answers, and SIGTERM leaves nothing running."""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import psutil
import pytest

from invsaga.dev.temporal import find_temporal_cli
from invsaga.events.signing import verify

pytestmark = pytest.mark.timeout(240)


def _invsaga(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "invsaga", *args], env=env, capture_output=True, text=True, timeout=120
    )


def _readme_block(section: str, language: str) -> str:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    return readme.split(section, 1)[1].split(f"```{language}\n", 1)[1].split("```", 1)[0]


def _occupy_if_free(port: int) -> socket.socket | None:
    """Listen on ``port`` so the stack finds its default taken (unless something already has it)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind(("127.0.0.1", port))
    except OSError:
        sock.close()
        return None
    sock.listen()
    return sock


def _assert_a_second_stack_refuses(env: dict[str, str], data_dir: Path, pid: int) -> None:
    """A second `invsaga dev` on the same folder says who runs it, and touches nothing."""
    before = (data_dir / "stack.json").read_text()
    second = _invsaga("dev", "--shards", "2", env=env)
    assert second.returncode == 75, second.stdout + second.stderr
    assert second.stderr.splitlines() == [
        f"error: a dev stack is already running, pid {pid} (data dir {data_dir.resolve()}); "
        "stop it first, or use another --data-dir"
    ]
    assert (data_dir / "stack.json").read_text() == before


def _run_readme_curl(endpoints: dict[str, str], data_dir: Path) -> None:
    """The README's "Over HTTP" commands, as written (only the API's port may differ), in a folder
    whose .data is the stack's, on a machine without uuidgen."""
    script = _readme_block("### Over HTTP", "bash").replace("http://127.0.0.1:8000", endpoints["api"])
    (data_dir.parent / ".data").symlink_to(data_dir)
    path = "/usr/bin:/bin"  # no uuidgen there unless the machine has it; the README must not need it
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=data_dir.parent,
        env={"PATH": f"{Path(sys.executable).parent}:{path}", "HOME": str(data_dir.parent)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "uuidgen" not in script
    answers, text, decoder = [], done.stdout.strip(), json.JSONDecoder()
    while text:  # curl -s prints each body without a newline after it
        answer, end = decoder.raw_decode(text)
        answers.append(answer)
        text = text[end:].lstrip()
    assert answers[0]["sku"] == "MUG-BLUE"
    assert answers[1]["order_id"] == "web-1" and answers[1]["held"] is True, answers
    assert answers[2]["order_id"] == "web-1", answers


class _WebhookReceiver(ThreadingHTTPServer):
    """A shop's webhook endpoint on loopback: records every delivery, answers 204."""

    def __init__(self) -> None:
        self.deliveries: list[tuple[dict[str, str], bytes]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.deliveries.append((dict(self.headers.items()), body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *_: object) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/hook"


def _run_the_shop_story(endpoints: dict[str, str], data_dir: Path) -> None:
    """The README's "A shop, end to end", as written (only the ports differ), run in the folder
    whose .data is the stack's: every step works, and the webhook hears each one, signed, in order."""
    receiver = _WebhookReceiver()
    try:
        script = (
            _readme_block("## A shop, end to end", "bash")
            .replace("http://127.0.0.1:8000", endpoints["api"])
            .replace("http://127.0.0.1:9000/hook", receiver.url)
        )
        done = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", script],
            cwd=data_dir.parent,
            env={"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "HOME": str(data_dir.parent)},
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        # curl -s prints the webhook's body without a newline: the commands' output follows it.
        registered, end = json.JSONDecoder().raw_decode(done.stdout)
        secret, printed = registered["secret"], done.stdout[end:]
        assert "order tea-1: CONFIRMED; amount 120.00 USD; TEA-POT: 1 at east + 3 at main" in printed, printed
        assert "tea-1" in printed.split("CONFIRMED", 1)[1]  # the order list names it
        for reason in ("receive", "reserve", "commit"):
            assert reason in printed.rsplit("TEA-POT", 1)[1], printed  # the stock history

        def story() -> list[dict[str, object]]:
            seen: dict[str, dict[str, object]] = {}
            for headers, body in receiver.deliveries:
                assert verify(secret, headers["Invsaga-Signature"], body), headers
                event = json.loads(body)
                assert headers["Invsaga-Event-Id"] == event["id"]
                data = event["data"]
                if data.get("sku") == "TEA-POT" or data.get("order_id") == "tea-1":
                    seen.setdefault(event["id"], event)  # at least once: dedupe by id
            return list(seen.values())

        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not any(e["type"] == "order.confirmed" for e in story()):
            time.sleep(0.2)
        events = story()
        changed = {
            where: [(e["data"]["version"], e["data"]["reason"], e["data"]["available"])
                    for e in events if e["type"] == "stock.changed" and e["data"]["location"] == where]
            for where in ("main", "east")
        }  # fmt: skip
        assert changed == {
            "main": [(1, "receive", 3), (2, "reserve", 0), (3, "commit", 0)],
            "east": [(1, "receive", 2), (2, "reserve", 1), (3, "commit", 1)],
        }, events
        sold_out = [e["data"]["location"] for e in events if e["type"] == "stock.sold_out"]
        assert sold_out == ["main"], events
        [confirmed] = [e for e in events if e["type"] == "order.confirmed"]
        assert confirmed["data"]["order_id"] == "tea-1"
    finally:
        receiver.shutdown()


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


#: Marker details the SDK writes for itself, without the codec: a patch's id, and a local activity's
#: sequence number, type and times (its result is a payload of ours, and encrypted).
SDK_MARKER_DETAILS = {"patch-data", "data"}


def _payloads(node: object, where: str = "ours") -> list[tuple[str, bytes, bytes]]:
    """Every payload of a history in the CLI's JSON: (where: ``ours``, ``search attributes`` or
    ``sdk``; encoding; data)."""
    found = []
    if isinstance(node, dict):
        if isinstance(node.get("metadata"), dict) and "data" in node:
            encoding = base64.b64decode(node["metadata"].get("encoding", ""))
            found.append((where, encoding, base64.b64decode(node["data"])))
        for key, value in node.items():
            if key == "searchAttributes":
                found += _payloads(value, "search attributes")
            elif key == "markerRecordedEventAttributes":
                details = value.get("details", {})
                found += _payloads({k: v for k, v in details.items() if k not in SDK_MARKER_DETAILS}, where)
                found += _payloads({k: v for k, v in details.items() if k in SDK_MARKER_DETAILS}, "sdk")
            else:
                found += _payloads(value, where)
    elif isinstance(node, list):
        for value in node:
            found += _payloads(value, where)
    return found


def _assert_history_encrypted_and_decodable(endpoints: dict[str, str], order_id: str, customer: str) -> None:
    """The history as ``temporal workflow show`` prints it: every payload encrypted but the search
    attributes, which carry the customer and never the token; through the codec server, the same
    command prints them decrypted."""
    show = [str(find_temporal_cli()), "workflow", "show", "--address", endpoints["temporal"],
            "--workflow-id", f"checkout-{order_id}", "-o", "json"]  # fmt: skip
    raw = subprocess.run(show, capture_output=True, text=True, timeout=60)
    assert raw.returncode == 0, raw.stderr
    history = json.loads(raw.stdout)
    payloads = _payloads(history)
    assert {encoding for where, encoding, _ in payloads if where == "ours"} == {b"binary/encrypted"}
    readable = [data for where, _, data in payloads if where != "ours"]
    assert not any(b"tok_success" in data for data in readable)
    assert {where for where, _, data in payloads if customer.encode() in data} == {"search attributes"}
    assert "tok_success" not in raw.stdout and customer not in raw.stdout

    codec = endpoints["codec_server"]
    started = history["events"][0]["workflowExecutionStartedEventAttributes"]
    [encrypted] = started["input"]["payloads"]
    # The dev codec server needs no credential (the dev Web UI has no login to pass one).
    answer = httpx.post(codec + "/decode", json={"payloads": [encrypted]}, timeout=10)
    assert answer.status_code == 200, answer.text
    [decoded] = answer.json()["payloads"]
    request = json.loads(base64.b64decode(decoded["data"]))
    assert (request["payment_token"], request["customer_id"]) == ("tok_success", customer)

    through_codec = subprocess.run(
        [*show, "--codec-endpoint", codec], capture_output=True, text=True, timeout=60
    )
    assert through_codec.returncode == 0, through_codec.stderr
    decoded_payloads = _payloads(json.loads(through_codec.stdout))
    assert b"binary/encrypted" not in {encoding for _, encoding, _ in decoded_payloads}
    assert any(b"tok_success" in data for _, _, data in decoded_payloads)

    # The Web UI is configured with it, and the UI's origin may call it from the browser.
    ui = endpoints["temporal_ui"]
    assert httpx.get(ui + "/api/v1/settings", timeout=10).json()["Codec"]["Endpoint"] == codec
    preflight = httpx.options(
        codec + "/decode",
        headers={"Origin": ui, "Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "content-type,x-namespace"},
        timeout=10,
    )  # fmt: skip
    assert preflight.headers.get("access-control-allow-origin") == ui


def test_dev_stack_serves_a_checkout_and_stops_cleanly(tmp_path: Path):
    data_dir = tmp_path / "data"
    env = {k: v for k, v in os.environ.items() if not k.startswith("INVSAGA_")}
    env["INVSAGA_DATA_DIR"] = str(data_dir)
    holder = _occupy_if_free(8000)  # the API's default: the stack must say where the API went instead
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
        api_port = int(endpoints["api"].rsplit(":", 1)[1])
        assert api_port != 8000
        assert f"  note: port 8000 is taken; the API is on {api_port} (pin it with --api-port)\n" in printed
        _assert_a_second_stack_refuses(env, data_dir, stack.pid)
        _run_readme_curl(endpoints, data_dir)
        _run_the_shop_story(endpoints, data_dir)
        assert httpx.get(endpoints["temporal_ui"], timeout=10).status_code == 200
        assert httpx.get(endpoints["api"] + "/readyz", timeout=10).status_code == 200

        order_id = f"e2e-{int(time.time())}"
        customer = f"e2e-customer-{order_id}"
        done = _invsaga("checkout", "MUG-BLUE:2", "--customer", customer, "--order-id", order_id, env=env)
        assert done.returncode == 0, done.stderr
        assert "CONFIRMED" in done.stdout
        found = subprocess.run(
            [str(find_temporal_cli()), "workflow", "list", "--address", endpoints["temporal"], "-o", "json",
             "--query", f"OrderId = '{order_id}' AND CheckoutStatus = 'CONFIRMED'"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert found.returncode == 0, found.stderr
        assert f"checkout-{order_id}" in found.stdout
        _assert_history_encrypted_and_decodable(endpoints, order_id, customer)
        readme = (
            _readme_python_snippet()
            .replace('"127.0.0.1:7233"', repr(endpoints["temporal"]))
            .replace('".data/payload-keys"', repr(str(data_dir / "payload-keys")))
        )
        snippet = subprocess.run(
            [sys.executable, "-c", _as_script(readme)], env=env, capture_output=True, text=True, timeout=120
        )
        assert snippet.returncode == 0, snippet.stderr
        assert snippet.stdout.splitlines() == ["True CONFIRMED", "store loaded: False"]
        audit = _invsaga("audit", env=env)
        assert audit.returncode == 0, audit.stdout + audit.stderr
        children = psutil.Process(stack.pid).children(recursive=True)
        assert len(children) >= 5  # temporal, payments, worker, api, codec (Postgres daemonizes via pg_ctl)
        assert (data_dir / "payload-keys").stat().st_mode & 0o777 == 0o600
        pg_ports = [int(dsn.split(":")[2].split("/")[0]) for name, dsn in endpoints.items()
                    if name.startswith(("shard_", "core_db"))]  # fmt: skip
    finally:
        stack.send_signal(signal.SIGTERM)
        stack.wait(timeout=120)
        if holder is not None:
            holder.close()
    assert stack.returncode == 0
    time.sleep(1)
    still_running = [p for p in children if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert still_running == []
    for port in pg_ports:
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
    assert not (data_dir / "stack.json").exists()
