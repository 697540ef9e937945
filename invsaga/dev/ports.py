"""Free loopback ports for the local servers the tests and the dev stack start, and the dev stack's
port plan: each service on its default port when free, on a port the user pinned, or, when its default
is taken, on a free one with a note that says so (never silently)."""

from __future__ import annotations

import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for_port(port: int, timeout: float = 30.0, host: str = "127.0.0.1") -> None:
    import time

    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listens on {host}:{port} after {timeout:.0f}s") from None
            time.sleep(0.05)


def port_is_free(port: int) -> bool:
    """Whether a server could listen on ``port`` now. SO_REUSEADDR, as servers set it, so a port that
    only has connections in TIME_WAIT counts as free; any listener, on loopback or 0.0.0.0, does not."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


class PortUnavailable(Exception):
    """A port the user pinned is taken, or out of range: never silently replaced."""


@dataclass(frozen=True)
class Service:
    """A server of the dev stack that listens on ``count`` consecutive ports from ``default``."""

    key: str
    label: str
    flag: str
    default: int
    count: int = 1
    #: What each of the ``count`` ports is, for the notes (the service's label when not given).
    parts: tuple[str, ...] = ()

    def part(self, index: int) -> str:
        return self.parts[index] if index < len(self.parts) else self.label


@dataclass
class PortPlan:
    """The port of each service, and a line for each that could not have its default."""

    ports: dict[str, list[int]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def port(self, key: str) -> int:
        return self.ports[key][0]


def plan_ports(
    services: Sequence[Service], pinned: Mapping[str, int], *, base: int | None = None
) -> PortPlan:
    """Give each service its port: a pinned one (by its flag, or from ``base``: the services at base,
    base+1, ... in order) must be free, or PortUnavailable says which and why; an unpinned one gets
    its default when free, else any free port, with a note saying so."""
    wanted: dict[str, tuple[int, str]] = {}
    offset = 0
    for service in services:
        if service.key in pinned:
            wanted[service.key] = (pinned[service.key], service.flag)
        elif base is not None:
            wanted[service.key] = (base + offset, f"--port-base {base}")
        offset += service.count
    plan = PortPlan()
    claimed: dict[int, str] = {}
    for service in services:  # the pinned ones first, so a fallback never takes a pinned port
        if service.key not in wanted:
            continue
        start, source = wanted[service.key]
        block = list(range(start, start + service.count))
        if block[0] < 1 or block[-1] > 65535:
            raise PortUnavailable(
                f"{service.label} needs ports {block[0]}-{block[-1]} ({source}): out of range"
            )
        for port in block:
            if port in claimed:
                raise PortUnavailable(f"port {port} ({source}) is already given to {claimed[port]}")
            if not port_is_free(port):
                raise PortUnavailable(
                    f"port {port} for {service.label} ({source}) is taken; stop what listens there "
                    f"or choose another with {service.flag}"
                )
            claimed[port] = service.label
        plan.ports[service.key] = block
    for service in services:
        if service.key in wanted:
            continue
        ports = []
        for index, default in enumerate(range(service.default, service.default + service.count)):
            port = default if default not in claimed and port_is_free(default) else _unclaimed(claimed)
            if port != default:
                plan.notes.append(
                    f"port {default} is taken; {service.part(index)} is on {port} "
                    f"(pin it with {service.flag})"
                )
            claimed[port] = service.label
            ports.append(port)
        plan.ports[service.key] = ports
    return plan


def _unclaimed(claimed: Mapping[int, str]) -> int:
    while (port := free_port()) in claimed:
        pass
    return port
