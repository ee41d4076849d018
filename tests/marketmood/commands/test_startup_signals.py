"""SIGTERM while a service starts its embedded broker and database (``docker stop``, systemd, a supervisor
giving up) must stop what it started, as Ctrl-C does: it killed the process there, leaving the embedded
PostgreSQL (and the worker's tansu broker, in a session of its own) running with no owner."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import pytest

from storage.embedded import postmaster_running, stop_server
from tests.fixtures.postgres import copy_data_dir

MARKETMOOD = str(Path(sys.executable).with_name("marketmood"))


def _tansu_alive(pid: int) -> bool:
    try:
        proc = psutil.Process(pid)
        return proc.status() != psutil.STATUS_ZOMBIE and "tansu" in " ".join(proc.cmdline())
    except psutil.Error:
        return False


def _tansu_pid(home: Path) -> int | None:
    try:
        return int(json.loads((home / "kafka" / "tansu.json").read_text())["pid"])
    except (FileNotFoundError, ValueError, KeyError):
        return None


@pytest.mark.parametrize("command", [["worker", "--metrics-port", "0"], ["alerts", "run", "--metrics-port", "0"],
                                     ["scheduler"]],
                         ids=["worker", "alerts-run", "scheduler"])
def test_sigterm_during_start_up_stops_the_embedded_services(command: list[str], pristine_pgdata: Path,
                                                             model_path: Path) -> None:
    home = Path(tempfile.mkdtemp(prefix="marketmood-pg-"))  # outside pytest's 0700 basetemp (see fresh_data_dir)
    data_dir = copy_data_dir(pristine_pgdata, home / "postgres")  # no initdb: start-up is a pg_ctl start
    env = {k: v for k, v in os.environ.items() if not k.startswith("MARKETMOOD_")}
    env.update(MARKETMOOD_HOME=str(home), MARKETMOOD_MODEL__PATH=str(model_path))
    proc = subprocess.Popen([MARKETMOOD, *command], cwd=home, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    broker_pid = None
    try:
        deadline = time.monotonic() + 300  # under load the scheduler's imports alone take minutes
        while postmaster_running(data_dir) is None:  # the database is starting: the process is mid start-up
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[0]
            time.sleep(0.02)
        broker_pid = _tansu_pid(home)  # the worker starts its broker first
        proc.send_signal(signal.SIGTERM)
        output = proc.communicate(timeout=120)[0].decode(errors="replace")
        assert postmaster_running(data_dir) is None, f"embedded PostgreSQL left running\n{output}"
        if command[0] == "worker":
            assert broker_pid is not None, output
            assert not _tansu_alive(broker_pid), f"embedded broker left running\n{output}"
        assert "Traceback" not in output, output
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        if postmaster_running(data_dir) is not None:
            stop_server(data_dir)
        if broker_pid is not None and _tansu_alive(broker_pid):
            os.kill(broker_pid, signal.SIGKILL)
        shutil.rmtree(home, ignore_errors=True)
