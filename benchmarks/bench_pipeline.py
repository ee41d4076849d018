"""Pipeline benchmark: engine alone vs end to end (publish -> row committed), and latency at half load.

In one run, on the same texts (generated demo headlines, or --reuters FILE for real ones):
1. engine alone: ``engine.classify`` over the texts in worker-sized batches -> texts/s;
2. saturation: all N messages published at once to a running, warmed-up worker (a subprocess, exactly as
   deployed) -> N / (time the N-th row is committed - publish start) -> msg/s, and the ratio to (1);
3. latency: messages published at half the measured pipeline throughput; latency = ``scored_at`` of the
   news.scored event - the send time -> p50 / p99. The worker stamps ``scored_at`` when its commit stage
   takes the scored batch (``streams/worker.py``, ``commit_batch``), BEFORE the DB write and commit, the
   news.scored publish and the offset commit: this is publish -> scored, not publish -> committed. Events not
   read back from news.scored within 60 s are counted as missing and reported (the run then exits 1).

``--sessions`` (default: this process's settings, i.e. ``MARKETMOOD_MODEL__SESSIONS`` or auto) sets the ONNX
sessions of both the engine-alone timing and the worker; the value is passed to the worker explicitly, because
the test harness drops every MARKETMOOD_* variable of this process from the worker's environment.

Embedded tansu + embedded PostgreSQL unless MARKETMOOD_KAFKA_BOOTSTRAP / MARKETMOOD_DATABASE_URL are set.

    python benchmarks/bench_pipeline.py [--n 3000] [--latency-seconds 30] [--model PATH] [--sessions {auto,1,2}]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kafka import KafkaConsumer, TopicPartition  # noqa: E402

from marketmood.logs import configure_logging  # noqa: E402
from marketmood.runtime import services  # noqa: E402
from marketmood.settings import TopicSettings, load_settings  # noqa: E402
from models.artifact import BUNDLED_MODEL_DIR  # noqa: E402
from streams.demo_news import DemoStream  # noqa: E402
from streams.publisher import RateLimiter, encode, make_producer  # noqa: E402
from tests.streams.harness import Db, WorkerProcess, wait_until  # noqa: E402


def texts_and_messages(n: int, prefix: str, reuters: Path | None) -> list[dict]:
    if reuters is not None:
        from itertools import islice

        from streams.sources import read_records

        msgs = [dict(m) for m in islice(read_records(reuters), n)]  # type: ignore[arg-type]
    else:
        msgs = list(DemoStream(n_articles=n, seed=11, run_id=prefix).articles())
    for i, m in enumerate(msgs):
        m["id"] = f"{prefix}-{i}"
    return msgs


def parse_sessions(value: str) -> int | str:
    """``auto`` or a count >= 1 (what ``MARKETMOOD_MODEL__SESSIONS`` accepts)."""
    if value == "auto":
        return value
    try:
        count = int(value)
    except ValueError:
        count = 0
    if count < 1:
        raise argparse.ArgumentTypeError(f"sessions must be auto or an integer >= 1, not {value!r}")
    return count


def worker_env(*, threads: int, sessions: int | str, log_level: str, batch_max_wait_s: float) -> dict[str, str]:
    """The MARKETMOOD_* settings the worker subprocess gets on top of the harness's (which drops this process's)."""
    return {"MARKETMOOD_MODEL__THREADS": str(threads), "MARKETMOOD_MODEL__SESSIONS": str(sessions),
            "MARKETMOOD_LOG_FORMAT": "json", "MARKETMOOD_LOG_LEVEL": log_level,
            "MARKETMOOD_WORKER__BATCH_MAX_WAIT_S": str(batch_max_wait_s)}


def engine_alone(model: Path | None, texts: list[str], batch: int, threads: int, sessions: int | str = "auto") -> float:
    from models.engine import load_engine

    engine = load_engine(model, threads=threads, sessions=sessions)  # type: ignore[arg-type]
    engine.classify(texts[:batch])  # warm-up
    started = time.perf_counter()
    for i in range(0, len(texts), batch):
        engine.classify(texts[i:i + batch])
    return len(texts) / (time.perf_counter() - started)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=3000, help="messages for the saturation run")
    ap.add_argument("--latency-seconds", type=float, default=30.0)
    ap.add_argument("--batch-size", type=int, default=None, help="worker batch size [default: settings]")
    ap.add_argument("--model", type=Path, default=None, help="model artifact [default: settings / bundled]")
    ap.add_argument("--reuters", type=Path, default=None, help="use the first N Reuters headlines instead")
    ap.add_argument("--worker-log-level", default="WARNING", help="DEBUG logs per-batch stage timings")
    ap.add_argument("--worker-log", type=Path, help="write the worker's log here (with DEBUG: stage timings)")
    ap.add_argument("--sessions", type=parse_sessions, default=None,
                    help="ONNX sessions (auto or N) of the engine-alone timing AND the worker [default: settings]")
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = ap.parse_args()

    configure_logging("WARNING")
    home = Path(tempfile.mkdtemp(prefix="mm-bench-"))
    settings = load_settings(home=home)
    batch = args.batch_size or settings.worker.batch_size
    model = args.model or settings.model.path or BUNDLED_MODEL_DIR  # pinned for both measurements
    run = uuid.uuid4().hex[:6]
    topics = TopicSettings(raw=f"bench.raw.{run}", scored=f"bench.scored.{run}", deadletter=f"bench.dl.{run}",
                           partitions=settings.topics.partitions)
    settings = load_settings(home=home, topics=topics)

    sat_msgs = texts_and_messages(args.n, f"sat{run}", args.reuters)
    texts = [m["title"] for m in sat_msgs]
    threads = settings.model.threads or os.cpu_count() or 1
    sessions = args.sessions if args.sessions is not None else settings.model.sessions
    engine_tps = engine_alone(model, texts, batch, threads, sessions)
    print(f"engine alone: {engine_tps:.1f} texts/s ({len(texts)} texts, batch {batch}, {threads} threads, "
          f"sessions {sessions})", flush=True)

    with services(settings) as svc:
        db = Db(svc.database_url)
        worker = WorkerProcess(bootstrap=svc.kafka_bootstrap, database_url=svc.database_url, topics=topics,
                               home=home, model_path=model, batch_size=batch, app_id=f"bench-{run}",
                               extra_env=worker_env(threads=threads, sessions=sessions, log_level=args.worker_log_level,
                                                    batch_max_wait_s=settings.worker.batch_max_wait_s))
        producer = make_producer(svc.kafka_bootstrap)
        try:
            # warm-up: the worker joins the group and loads the model
            warm = texts_and_messages(2 * batch, f"warm{run}", None)
            for m in warm:
                key, value = encode(m)
                producer.send(topics.raw, key=key, value=value)
            producer.flush()
            wait_until(lambda: db.articles() >= len(warm), 180, what="warm-up rows\n" + worker.log()[-2000:])
            base = db.articles()

            # saturation: everything at once
            started = time.perf_counter()
            for m in sat_msgs:
                key, value = encode(m)
                producer.send(topics.raw, key=key, value=value)
            producer.flush()
            publish_s = time.perf_counter() - started
            wait_until(lambda: db.articles() >= base + args.n, 1800, interval_s=0.05, what="saturation rows")
            pipeline_tps = args.n / (time.perf_counter() - started)
            print(f"pipeline at saturation: {pipeline_tps:.1f} msg/s (publish took {publish_s:.2f}s); "
                  f"ratio {pipeline_tps / engine_tps:.3f}", flush=True)

            # latency at half saturation
            rate = pipeline_tps / 2
            n_lat = max(50, int(rate * args.latency_seconds))
            lat_msgs = texts_and_messages(n_lat, f"lat{run}", args.reuters)
            sent_at: dict[str, float] = {}
            limiter = RateLimiter(rate)
            for m in lat_msgs:
                limiter.wait()
                key, value = encode(m)
                sent_at[m["id"]] = time.time()
                producer.send(topics.raw, key=key, value=value)
            producer.flush()
            wait_until(lambda: db.articles() >= base + args.n + n_lat, 600, interval_s=0.1, what="latency rows")
            latencies, missing = scored_latencies(svc.kafka_bootstrap, topics.scored, sent_at)
            if not latencies:
                raise SystemExit(f"none of the {len(sent_at)} latency messages came back on {topics.scored} in 60 s")
            p50, p99 = percentile(latencies, 50), percentile(latencies, 99)
            print(f"latency (publish -> scored_at, before the DB write) at {rate:.1f} msg/s ({len(latencies)} msgs"
                  f"{f', {missing} of {len(sent_at)} MISSING: not read back in 60 s' if missing else ''}): "
                  f"p50 {p50:.3f}s p99 {p99:.3f}s", flush=True)
            assert worker.terminate() == 0
            if args.worker_log:
                args.worker_log.write_text(worker.log())
        finally:
            worker.kill()
            producer.close()
            db.close()

    result = {
        "n": args.n, "batch_size": batch, "threads": threads, "sessions": sessions, "model": str(model),
        "engine_texts_per_s": round(engine_tps, 1), "pipeline_msgs_per_s": round(pipeline_tps, 1),
        "ratio": round(pipeline_tps / engine_tps, 3), "latency_rate_msgs_per_s": round(rate, 1),
        "latency_p50_s": round(p50, 3), "latency_p99_s": round(p99, 3), "latency_n": len(latencies),
        "latency_missing": missing,
    }
    print(json.dumps(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    if missing:
        sys.exit(f"{missing} of {len(sent_at)} latency messages were not read back from news.scored within 60 s: "
                 "the percentiles above leave them out")


def latencies_from_events(events: Iterable[tuple[str, str]], sent_at: dict[str, float]) -> tuple[list[float], int]:
    """(latency per sent id from its first news.scored event, number of sent ids without an event).

    ``events``: (id, scored_at ISO time) in topic order; ids not sent by this run are ignored."""
    first: dict[str, float] = {}
    for event_id, scored_at in events:
        if event_id in sent_at and event_id not in first:
            first[event_id] = datetime.fromisoformat(scored_at).timestamp()
    return [first[i] - sent_at[i] for i in first], len(sent_at) - len(first)


def scored_latencies(bootstrap: str, topic: str, sent_at: dict[str, float]) -> tuple[list[float], int]:
    """Latencies of the sent ids read back from ``topic`` within 60 s, and how many ids were not seen."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, consumer_timeout_ms=1000)
    tps = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
    consumer.assign(tps)
    consumer.seek_to_beginning(*tps)
    events: list[tuple[str, str]] = []
    seen: set[str] = set()
    deadline = time.monotonic() + 60
    while len(seen) < len(sent_at) and time.monotonic() < deadline:
        for records in consumer.poll(timeout_ms=500).values():
            for r in records:
                event = json.loads(r.value)
                events.append((event["id"], event["scored_at"]))
                if event["id"] in sent_at:
                    seen.add(event["id"])
    consumer.close()
    return latencies_from_events(events, sent_at)


if __name__ == "__main__":
    main()
