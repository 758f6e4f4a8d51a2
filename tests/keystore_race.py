"""One of several processes making the keys of the same subjects at once (see test_key_stores).

Usage: python -m tests.keystore_race KIND TARGET SUBJECTS...; prints {subject: key hex}.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any


async def main(kind: str, target: str, subjects: list[str]) -> None:
    keys: Any
    if kind == "sqlite":
        from eventtape.stores.sql_keys import SqliteKeyStore

        keys = SqliteKeyStore(target)
    elif kind == "postgres":
        from eventtape.stores.sql_keys import PostgresKeyStore

        keys = PostgresKeyStore(target)
    else:
        import nats

        from eventtape.stores.jetstream import JetStreamKeyStore

        url, _, bucket = target.rpartition("|")
        keys = JetStreamKeyStore(await nats.connect(url), bucket=bucket, storage="memory")
    await keys.start()
    print("ready", flush=True)
    await asyncio.to_thread(sys.stdin.readline)  # every process is told "go" at once
    made = await asyncio.gather(*(keys.key_for(subject) for subject in subjects))
    print(json.dumps({s: k.hex() for s, k in zip(subjects, made, strict=True)}), flush=True)
    if hasattr(keys, "aclose"):
        await keys.aclose()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3:]))
