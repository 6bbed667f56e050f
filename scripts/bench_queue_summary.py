"""Queue summary benchmark: ``queue.summary`` (the destinations page and /healthz) on a
forward queue of N rows, most of them delivered, as a box has after months of work.

Per size: three destinations; --waiting rows waiting (with an error), --dead dead letters,
the rest delivered (spread over 30 days, about 50 in the last minute). Times ``summary``
(median of --repeat calls on a warm cache) and, for the cost of keeping it cheap, recording
--batch images (a commit each) and marking them delivered (one commit). Prints a Markdown
table.

    scripts/bench queue_summary [--sizes 1000,200000] [--waiting 100] [--dead 50]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from appliance.app import open_store  # noqa: E402
from appliance.forward import queue  # noqa: E402

DESTINATIONS = ("pacs", "offsite", "archive")
CT = "1.2.840.10008.5.1.4.1.1.2"
ELE = "1.2.840.10008.1.2.1"


def fill(data_dir: Path, rows: int, waiting: int, dead: int, now: float) -> None:
    """``rows`` queue rows over len(DESTINATIONS) destinations, ``waiting`` of them waiting
    and ``dead`` dead (spread evenly), written in one transaction."""
    store = open_store(data_dir)
    per = len(DESTINATIONS)
    with store.write(durable=False) as db:
        for n in range(rows // per):
            t = now - 30 * 86400 + n * (30 * 86400 / (rows // per))
            cur = db.execute(
                "INSERT INTO forward_instances (sop_instance_uid, sop_class_uid, "
                "transfer_syntax, modality, calling_ae, file, digest, size, received_at) "
                "VALUES (?, ?, ?, 'CT', 'CT1', ?, ?, 1, ?)",
                (f"1.2.3.{n}", CT, ELE, f"f{n}", f"d{n}", t),
            )
            for k, dest in enumerate(DESTINATIONS):
                i = n * per + k
                if i * dead // rows != (i + 1) * dead // rows:
                    state, delivered, error = "dead", None, "refused: 0xC000"
                elif (i + 7) * waiting // rows != (i + 8) * waiting // rows:
                    state, delivered, error = "waiting", None, "no association"
                else:
                    state, delivered, error = "delivered", t + 1, ""
                if state == "delivered" and n >= rows // per - 50 // per:
                    delivered = now - 10  # the last minute's throughput
                db.execute(
                    "INSERT INTO forward_queue (instance_id, destination, state, next_attempt, "
                    "last_error, queued_at, updated_at, delivered_at) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (cur.lastrowid, dest, state, t + 60, error, t, t + 1, delivered),
                )
    store.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    store.close()


def time_summary(data_dir: Path, repeat: int, now: float) -> float:
    """Median milliseconds of one ``summary`` call."""
    store = open_store(data_dir)
    queue.summary(store, DESTINATIONS, now)  # warm the cache
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        queue.summary(store, DESTINATIONS, now)
        times.append((time.perf_counter() - t) * 1000)
    store.close()
    return statistics.median(times)


def time_deliveries(data_dir: Path, batch: int, now: float) -> float:
    """Milliseconds to record ``batch`` new images and mark them delivered (one commit each)."""
    store = open_store(data_dir)
    t = time.perf_counter()
    for n in range(batch):
        info = queue.InstanceInfo(f"9.9.{n}", CT, ELE, "CT", "CT1")
        queue.record_instance(store, info, f"g{n}", f"e{n}", 1, ["pacs"], now, durable=False)
    items = queue.claim(store, "pacs", batch, now=now + 1e6)
    queue.mark_delivered(store, [(i, 0) for i in items], now)
    ms = (time.perf_counter() - t) * 1000
    store.close()
    return ms


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,200000", help="queue rows, comma-separated")
    parser.add_argument("--waiting", type=int, default=100, help="waiting rows of each size")
    parser.add_argument("--dead", type=int, default=50, help="dead letters of each size")
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--batch", type=int, default=2000, help="images for the write cost")
    args = parser.parse_args()
    now = time.time()
    print(f"| queue rows | waiting | dead | summary (median ms) | record + deliver {args.batch} "
          "images (ms) |")  # fmt: skip
    print("|---:|---:|---:|---:|---:|")
    for size in (int(s) for s in args.sizes.split(",")):
        with tempfile.TemporaryDirectory() as tmp:
            data = Path(tmp)
            fill(data, size, min(args.waiting, size), min(args.dead, size), now)
            ms = time_summary(data, args.repeat, now)
            writes = time_deliveries(data, args.batch, now)
        w, d = min(args.waiting, size), min(args.dead, size)
        print(f"| {size:,} | {w:,} | {d:,} | {ms:.2f} | {writes:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
