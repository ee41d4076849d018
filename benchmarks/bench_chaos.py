"""Chaos benchmark: real workers under a steady seeded stream of valid and poison records while faults are
injected on a schedule, then the invariant checker (marketmood/tools/invariant.py).

Faults, in a seeded rotation: worker SIGKILL (and a replacement), worker SIGTERM mid-batch (and a
replacement), a rebalance (an extra member joins, later leaves), a PostgreSQL restart, PostgreSQL turned
read-only for a few seconds (a failover to a replica). Poison records ride in the stream all along:
100k-deep JSON, invalid UTF-8, wrong types, records too large to dead-letter as they are, and copies of an
id with different content.

Prints and writes (``--out``, default benchmarks/results/chaos.json): records sent, faults by kind,
records stored, dead-lettered by reason, lost (must be 0), duplicate rows (must be 0), duplicate news.scored
events, maximum lag, time to catch up after the last fault, peak RSS of each worker and its RSS once warm
(a quarter into its samples) and at its last sample (flat = no growth). RSS is sampled every ~2 s; the peak
is the kernel's high-water mark (``VmHWM`` in /proc/<pid>/status, read at every sample and right before a
worker is killed or stopped), so a spike between samples counts; where /proc has no VmHWM the peak falls
back to the largest sample (``peak_source`` says which).

    python benchmarks/bench_chaos.py [--records 50000] [--rate 300] [--workers 2] [--fault-every 8]
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psutil  # noqa: E402
from kafka import KafkaConsumer, KafkaProducer, TopicPartition  # noqa: E402
from sqlalchemy import text  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402
from sqlalchemy.pool import NullPool  # noqa: E402

from marketmood.settings import TopicSettings  # noqa: E402
from marketmood.tools.invariant import check_invariant  # noqa: E402
from models.artifact import BUNDLED_MODEL_DIR  # noqa: E402
from storage import migrate  # noqa: E402
from storage.db import make_engine  # noqa: E402
from storage.embedded import EmbeddedPostgres  # noqa: E402
from streams.broker import EmbeddedBroker  # noqa: E402
from streams.topics import ensure_topics  # noqa: E402
from tests.streams.harness import WorkerProcess, article  # noqa: E402

FAULTS = ("sigkill", "db_restart", "rebalance", "db_readonly", "sigterm")


def read_vmhwm_mb(pid: int, proc: Path = Path("/proc")) -> float | None:
    """Peak RSS (``VmHWM``) of a live process in MiB, or None where /proc does not report it (gone, not Linux)."""
    try:
        status = (proc / str(pid) / "status").read_text()
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024  # kB
    return None


def rss_summary(samples: list[float], hwm_mb: float | None) -> dict[str, Any]:
    """Warm / last RSS from the samples; peak from the kernel's high-water mark when read, else the samples."""
    peak, source = (max(hwm_mb, max(samples)), "VmHWM") if hwm_mb is not None else (max(samples), "rss samples")
    return {"warm": round(samples[len(samples) // 4]), "last": round(samples[-1]), "peak": round(peak),
            "peak_source": source, "samples": len(samples)}


def record_stream(n: int, seed: int) -> list[bytes]:
    """85% valid articles, 15% poison of five kinds (seeded)."""
    rng = random.Random(seed)
    out: list[bytes] = []
    for i in range(n):
        roll = rng.random()
        msg = article(i, "chaos")
        if roll < 0.85:
            out.append(json.dumps(msg).encode())
        elif roll < 0.88:
            out.append(b'{"id":"deep%d","title":' % i + b"[" * 100_000 + b"]" * 100_000 + b"}")
        elif roll < 0.91:
            out.append(b"\xff\xfe" + json.dumps(msg).encode())
        elif roll < 0.94:
            out.append(json.dumps({**msg, "title": 12345}).encode())
        elif roll < 0.95:
            out.append(json.dumps({**msg, "title": "x" * 1_200_000}).encode())  # > the worker's 1 MiB limit
        else:
            out.append(json.dumps({**msg, "id": f"chaos-{max(0, i - 3)}", "title": f"rewritten {i}"}).encode())
    return out


class Chaos:
    def __init__(self, args: argparse.Namespace, root: Path) -> None:
        self.args, self.root = args, root
        self.rng = random.Random(args.seed)
        self.faults: dict[str, int] = {k: 0 for k in FAULTS}
        self.workers: list[WorkerProcess] = []
        self.rss: dict[str, list[float]] = {}
        self.hwm: dict[str, float] = {}  # VmHWM per worker, the last one read (it only grows)
        self.max_lag = 0
        self.stop = threading.Event()

    # -- services ---------------------------------------------------------------------------------------
    def start_services(self) -> None:
        self.broker = EmbeddedBroker(self.root / "kafka")
        self.bootstrap = self.broker.start()
        self.pg = EmbeddedPostgres(self.root / "postgres")
        self.pg.start()
        self.db_url = self.pg.url
        migrate.upgrade(self.db_url)
        suffix = datetime.now(timezone.utc).strftime("%H%M%S")
        self.topics = TopicSettings(raw=f"news.raw.chaos{suffix}", scored=f"news.scored.chaos{suffix}",
                                    deadletter=f"news.deadletter.chaos{suffix}", partitions=self.args.partitions)
        ensure_topics(self.bootstrap, self.topics)
        self.group = f"chaos-{suffix}"

    def new_worker(self) -> WorkerProcess:
        name = f"w{len(self.workers)}"
        worker = WorkerProcess(bootstrap=self.bootstrap, database_url=self.db_url, topics=self.topics,
                               home=self.root / name, model_path=BUNDLED_MODEL_DIR, batch_size=self.args.batch,
                               app_id=self.group)
        worker.name = name  # type: ignore[attr-defined]
        self.workers.append(worker)
        return worker

    def alive(self) -> list[WorkerProcess]:
        return [w for w in self.workers if w.alive()]

    # -- faults -----------------------------------------------------------------------------------------
    def inject(self, kind: str) -> None:
        self.faults[kind] += 1
        live = self.alive()
        print(f"[{time.strftime('%H:%M:%S')}] fault {kind} (workers alive: {len(live)})", flush=True)
        self.sample_rss()  # last look at the high-water marks before a worker goes
        if kind == "sigkill" and live:
            self.rng.choice(live).kill()
            self.new_worker()
        elif kind == "sigterm" and live:
            self.rng.choice(live).terminate(60)
            self.new_worker()
        elif kind == "rebalance":
            extra = self.new_worker()
            threading.Timer(self.args.fault_every * 0.6, lambda: extra.terminate(60)).start()
        elif kind == "db_restart":
            self.pg.stop()
            time.sleep(3)
            self.pg.start()
        elif kind == "db_readonly":
            self._read_only(True)
            time.sleep(4)
            self._read_only(False)

    def _read_only(self, on: bool) -> None:
        name = make_url(self.db_url).database
        engine = make_engine(self.db_url, poolclass=NullPool, isolation_level="AUTOCOMMIT",
                             connect_args={"options": "-c default_transaction_read_only=off"})
        with engine.connect() as conn:
            conn.execute(text(f'ALTER DATABASE "{name}" SET default_transaction_read_only = {"on" if on else "off"}'))
            if on:  # existing sessions keep their setting: end them so the workers reconnect read-only
                conn.execute(text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                  "WHERE datname = current_database() AND pid <> pg_backend_pid()"))
        engine.dispose()

    # -- monitoring -------------------------------------------------------------------------------------
    def lag(self, consumer: KafkaConsumer, tps: list[TopicPartition], total_sent: int) -> int:
        committed = sum(consumer.committed(tp) or 0 for tp in tps)
        return max(0, total_sent - committed)

    def sample_rss(self) -> None:
        for w in self.alive():
            try:
                rss = psutil.Process(w.proc.pid).memory_info().rss / 2**20
            except psutil.Error:
                continue
            self.rss.setdefault(w.name, []).append(rss)  # type: ignore[attr-defined]
            hwm = read_vmhwm_mb(w.proc.pid)
            if hwm is not None:
                self.hwm[w.name] = max(hwm, self.hwm.get(w.name, 0.0))  # type: ignore[attr-defined]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=50_000, help="records to publish")
    parser.add_argument("--rate", type=float, default=300.0, help="records per second")
    parser.add_argument("--workers", type=int, default=2, help="workers at the start")
    parser.add_argument("--partitions", type=int, default=4, help="partitions of news.raw")
    parser.add_argument("--batch", type=int, default=32, help="worker batch size")
    parser.add_argument("--fault-every", type=float, default=8.0, help="seconds between injected faults")
    parser.add_argument("--seed", type=int, default=7, help="seed of the record mix and the fault rotation")
    parser.add_argument("--catch-up-timeout", type=float, default=900.0, help="seconds to wait for the backlog")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "chaos.json")
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="mm-chaos-"))
    chaos = Chaos(args, root)
    chaos.start_services()
    values = record_stream(args.records, args.seed)
    for _ in range(args.workers):
        chaos.new_worker()
    producer = monitor = None
    tps = [TopicPartition(chaos.topics.raw, p) for p in range(args.partitions)]
    sent = 0
    started = time.monotonic()
    next_fault = started + args.fault_every
    rotation = itertools.cycle(FAULTS)
    last_sample = 0.0
    try:
        producer = KafkaProducer(bootstrap_servers=chaos.bootstrap, max_request_size=4 * 2**20, linger_ms=20)
        monitor = KafkaConsumer(bootstrap_servers=chaos.bootstrap, group_id=chaos.group, enable_auto_commit=False)
        for value in values:
            producer.send(chaos.topics.raw, value=value)
            sent += 1
            target = started + sent / args.rate
            now = time.monotonic()
            if now >= next_fault:
                producer.flush()
                chaos.inject(next(rotation))
                next_fault = time.monotonic() + args.fault_every
            if now - last_sample > 2:
                chaos.max_lag = max(chaos.max_lag, chaos.lag(monitor, tps, sent))
                chaos.sample_rss()
                last_sample = now
            if target > now:
                time.sleep(target - now)
        producer.flush()
        last_fault_at = time.monotonic()
        print(f"published {sent} in {last_fault_at - started:.0f}s; waiting for the backlog", flush=True)
        deadline = last_fault_at + args.catch_up_timeout
        while time.monotonic() < deadline:
            lag = chaos.lag(monitor, tps, sent)
            chaos.max_lag = max(chaos.max_lag, lag)
            chaos.sample_rss()
            if lag == 0:
                break
            time.sleep(2)
        catch_up_s = time.monotonic() - last_fault_at
        time.sleep(3)
        report = check_invariant(chaos.bootstrap, chaos.db_url, chaos.topics, chaos.group)
    finally:
        if monitor is not None:
            monitor.close()
        if producer is not None:
            producer.close()
        chaos.sample_rss()  # final high-water marks of the workers still running
        for w in chaos.workers:
            if w.alive():
                w.terminate(30)
        chaos.pg.stop()
        chaos.broker.stop()

    result: dict[str, Any] = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "records_sent": sent, "faults": chaos.faults, "faults_total": sum(chaos.faults.values()),
        "records_checked": report.records_checked, "stored": report.stored,
        "dead_by_reason": dict(report.dead_by_reason), "lost": len(report.lost),
        "bad_dead_letters": len(report.bad_dead_letters), "duplicate_rows": report.duplicate_rows,
        "scored_events": report.scored_events, "duplicate_scored_events": report.duplicate_scored_events,
        "max_lag": chaos.max_lag, "catch_up_s": round(catch_up_s, 1),
        # after the model is loaded (a quarter into the worker's samples) vs its last sample: flat = no growth;
        # peak: VmHWM (a sampled max misses spikes between the ~2 s samples)
        "rss_mb": {name: rss_summary(v, chaos.hwm.get(name)) for name, v in chaos.rss.items() if v},
        "invariant_ok": report.ok and report.records_checked == sent,
        "args": {k: str(v) for k, v in vars(args).items()},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    return 0 if result["invariant_ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
