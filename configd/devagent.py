"""Start and stop real Consul agents on loopback: the throwaway dev agent of ``configd dev`` and the tests.

Every agent gets free ports, is health-polled until it has a Raft leader, and is torn down with its
process group. Nothing here talks to anything but 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
INSTALL_SCRIPT = PROJECT_ROOT / "scripts" / "install-consul.sh"


class ConsulNotInstalled(RuntimeError):
    """No usable consul binary, and the install script could not fetch one."""


def consul_binary() -> str:
    """Path of a consul >= 1.8: ``CONSUL_BIN``, PATH, ``.cache/``, or installed by the project's script."""
    if INSTALL_SCRIPT.exists():
        done = subprocess.run(["bash", str(INSTALL_SCRIPT)], capture_output=True, text=True, check=False)
        if done.returncode == 0 and done.stdout.strip():
            return done.stdout.strip().splitlines()[-1]
        raise ConsulNotInstalled(f"scripts/install-consul.sh failed: {done.stderr.strip()}")
    found = os.environ.get("CONSUL_BIN") or shutil.which("consul")
    if not found:
        raise ConsulNotInstalled("consul not found: set CONSUL_BIN or put consul >= 1.8 on PATH")
    return found


def free_ports(count: int) -> list[int]:
    """Distinct free TCP ports on 127.0.0.1 (also free for UDP in practice: serf uses both)."""
    sockets: list[socket.socket] = []
    ports: list[int] = []
    try:
        while len(ports) < count:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
            port = s.getsockname()[1]
            if port not in ports:
                ports.append(port)
    finally:
        for s in sockets:
            s.close()
    return ports


def port_is_free(port: int) -> bool:
    """True when nothing listens on ``port`` on 127.0.0.1 and we may bind it."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@dataclass
class AgentPorts:
    http: int
    dns: int
    serf_lan: int
    serf_wan: int
    server: int

    @classmethod
    def allocate(cls) -> AgentPorts:
        return cls(*free_ports(5))

    def hcl(self) -> str:
        return (
            f"ports {{ http = {self.http}, dns = {self.dns}, serf_lan = {self.serf_lan}, "
            f"serf_wan = {self.serf_wan}, server = {self.server}, grpc = -1, https = -1 }}"
        )


@dataclass
class ConsulAgent:
    """One consul agent process on loopback. Use :meth:`dev` for a throwaway single-node agent."""

    args: list[str]
    ports: AgentPorts
    name: str
    extra_hcl: str = ""
    binary: str = ""
    log_path: Path | None = None
    process: subprocess.Popen[bytes] | None = None
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="configd-consul-")))

    @classmethod
    def dev(cls, *, name: str = "configd-dev", extra_hcl: str = "", http_port: int | None = None) -> ConsulAgent:
        """A single-node in-memory ``consul agent -dev`` on free loopback ports.

        ``http_port`` asks for one HTTP port (e.g. Consul's default 8500) and falls back to a free one when it is taken.
        """
        ports = AgentPorts.allocate()
        if http_port is not None and port_is_free(http_port):
            ports.http = http_port
        return cls(args=["-dev"], ports=ports, name=name, extra_hcl=extra_hcl)

    @property
    def http_addr(self) -> str:
        return f"http://127.0.0.1:{self.ports.http}"

    def start(self, timeout: float = 30.0, wait_for_leader: bool = True) -> ConsulAgent:
        self.binary = self.binary or consul_binary()
        config = self.workdir / "ports.hcl"
        config.write_text(self.ports.hcl() + "\n" + self.extra_hcl + "\n")
        self.log_path = self.workdir / "consul.log"
        cmd = [
            self.binary,
            "agent",
            *self.args,
            "-node",
            self.name,
            "-bind",
            "127.0.0.1",
            "-client",
            "127.0.0.1",
            "-config-file",
            str(config),
        ]
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
            )
        if wait_for_leader:
            self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Poll /v1/status/leader until the agent answers with a leader."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"consul exited with {self.process.returncode}; log:\n{self.log_tail()}")
            if self.leader():
                return
            time.sleep(0.05)
        raise TimeoutError(f"consul at {self.http_addr} had no leader after {timeout}s; log:\n{self.log_tail()}")

    def leader(self) -> str:
        try:
            with urllib.request.urlopen(f"{self.http_addr}/v1/status/leader", timeout=1) as answer:
                return str(answer.read().decode().strip().strip('"'))
        except OSError:
            return ""

    def log_tail(self, lines: int = 40) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` to the agent's process group and reap it."""
        if self.process is None or self.process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, sig)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=5)

    def stop(self) -> None:
        self.kill(signal.SIGTERM)

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> ConsulAgent:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.cleanup()


@dataclass
class ConsulCluster:
    """Three (or five) Consul servers plus one client agent on loopback, as in production.

    Applications and configd talk to the client agent (:attr:`http_addr`); servers can be killed and restarted
    to force leader elections. ``raft_multiplier = 1`` is HashiCorp's production setting: a new leader in ~3 s.
    """

    size: int = 3
    servers: list[ConsulAgent] = field(default_factory=list)
    client: ConsulAgent | None = None
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="configd-cluster-")))

    def start(self, timeout: float = 60.0) -> ConsulCluster:
        binary = consul_binary()
        all_ports = [AgentPorts.allocate() for _ in range(self.size + 1)]
        joins: list[str] = []
        for ports in all_ports[: self.size]:
            joins += ["-retry-join", f"127.0.0.1:{ports.serf_lan}"]
        joins += ["-retry-interval", "1s"]
        hcl = "performance { raft_multiplier = 1 }\n"
        for i, ports in enumerate(all_ports[: self.size]):
            data_dir = self.workdir / f"server{i}"
            data_dir.mkdir(parents=True, exist_ok=True)
            args = ["-server", "-bootstrap-expect", str(self.size), "-data-dir", str(data_dir), *joins]
            agent = ConsulAgent(args=args, ports=ports, name=f"server{i}", extra_hcl=hcl, binary=binary)
            self.servers.append(agent.start(wait_for_leader=False))
        data_dir = self.workdir / "client"
        data_dir.mkdir(parents=True, exist_ok=True)
        self.client = ConsulAgent(
            args=["-data-dir", str(data_dir), *joins],
            ports=all_ports[self.size],
            name="client0",
            extra_hcl=hcl,
            binary=binary,
        ).start(wait_for_leader=False)
        self.client.wait_ready(timeout)
        return self

    @property
    def http_addr(self) -> str:
        assert self.client is not None
        return self.client.http_addr

    def leader_agent(self) -> ConsulAgent | None:
        """The server agent that is the Raft leader now, if any."""
        leader = self.client.leader() if self.client else ""
        for agent in self.servers:
            if leader.endswith(f":{agent.ports.server}") and agent.process and agent.process.poll() is None:
                return agent
        return None

    def restart(self, agent: ConsulAgent) -> None:
        """Start a killed server again with the same ports and data directory."""
        agent.kill()
        agent.start(wait_for_leader=False)

    def cleanup(self) -> None:
        for agent in [*self.servers, *([self.client] if self.client else [])]:
            agent.cleanup()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> ConsulCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.cleanup()
