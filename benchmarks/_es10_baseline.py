"""The eventsourcing 10 DCB baseline, run in a subprocess with its own PYTHONPATH.

``python _es10_baseline.py <backend> <mode> <count> [host port user dbname]``: backend ``memory``
or ``postgres``; mode ``sequential`` or ``concurrent`` (16 threads). Prints one JSON line:
``{"ops": decisions/s, "p50_ms", "p99_ms", "conflicts"}``. The workload is the one the eventtape
side runs: read a query (one tag), append one event under the condition (query, head read).
"""

from __future__ import annotations

import json
import statistics
import sys
import threading
import time
import uuid

from eventsourcing.dcb.api import DcbAppendCondition, DcbEvent, DcbQuery, DcbQueryItem
from eventsourcing.persistence import IntegrityError

WORKERS = 16


def recorder(backend: str, args: list[str]):  # type: ignore[no-untyped-def]
    if backend == "memory":
        from eventsourcing.dcb.popo import InMemoryDcbRecorder

        return InMemoryDcbRecorder()
    from eventsourcing.dcb.postgres_tt import PostgresDcbRecorderTT
    from eventsourcing.postgres import PostgresDatastore

    host, port, user, dbname = args
    datastore = PostgresDatastore(
        dbname, host, port, user, "", pool_size=WORKERS + 2, max_overflow=0
    )
    rec = PostgresDcbRecorderTT(
        datastore=datastore, events_table_name=f"dcb_{uuid.uuid4().hex[:8]}"
    )
    rec.create_table()
    return rec


def decide(rec, tag: str, conflicts: list[int]) -> None:  # type: ignore[no-untyped-def]
    query = DcbQuery(items=[DcbQueryItem(types=["Redeemed"], tags=[tag])])
    response = rec.read(query)
    _ = list(response)
    head = response.head
    event = DcbEvent(type="Redeemed", data=b'{"n":1}', tags=[tag], uuid=uuid.uuid4(), metadata={})
    try:
        rec.append([event], DcbAppendCondition(fail_if_events_match=query, after=head))
    except IntegrityError:
        conflicts.append(1)


def main() -> None:
    backend, mode, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    rec = recorder(backend, sys.argv[4:])
    conflicts: list[int] = []
    latencies: list[float] = []
    run = uuid.uuid4().hex[:6]
    if mode == "sequential":
        start = time.perf_counter()
        for n in range(count):
            t = time.perf_counter()
            decide(rec, f"customer:{run}-{n}", conflicts)
            latencies.append(time.perf_counter() - t)
        elapsed = time.perf_counter() - start
    else:
        per = count // WORKERS

        def worker(w: int) -> None:
            for n in range(per):
                # Mostly disjoint: one decision in 20 is on a tag every worker shares.
                tag = f"coupon:{run}-{n // 20}" if n % 20 == 0 else f"customer:{run}-{w}-{n}"
                t = time.perf_counter()
                decide(rec, tag, conflicts)
                latencies.append(time.perf_counter() - t)

        threads = [threading.Thread(target=worker, args=(w,)) for w in range(WORKERS)]
        start = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = time.perf_counter() - start
        count = per * WORKERS
    latencies.sort()
    print(
        json.dumps(
            {
                "ops": count / elapsed,
                "p50_ms": statistics.median(latencies) * 1000,
                "p99_ms": latencies[int(len(latencies) * 0.99) - 1] * 1000,
                "conflicts": len(conflicts),
            }
        )
    )


if __name__ == "__main__":
    main()
