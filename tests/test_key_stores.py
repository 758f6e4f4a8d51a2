"""Every key store keeps the KeyStore contract; SQL ones also across processes and on disk."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest

from eventtape import InvalidArgument, StoreUnavailable
from eventtape.privacy import InMemoryKeyStore
from eventtape.stores.sql_keys import PostgresKeyStore, SqliteKeyStore
from eventtape.testing import KeyStoreContract

ROOT = Path(__file__).resolve().parent.parent


class TestInMemoryKeyStore(KeyStoreContract):
    @contextlib.asynccontextmanager
    async def make_key_store(self) -> AsyncIterator[InMemoryKeyStore]:
        yield InMemoryKeyStore()


class TestJetStreamKeyStore(KeyStoreContract):
    @pytest.fixture(autouse=True)
    def _server(self, nats_url: str) -> None:
        self.url = nats_url

    @contextlib.asynccontextmanager
    async def make_key_store(self) -> AsyncIterator[Any]:
        import nats

        from eventtape.stores.jetstream import JetStreamKeyStore

        nc = await nats.connect(self.url)
        bucket = f"KC{uuid4().hex[:8]}"
        keys = JetStreamKeyStore(nc, bucket=bucket, storage="memory")
        await keys.start()
        try:
            yield keys
        finally:
            await nc.jetstream().delete_key_value(bucket)
            await nc.close()


class TestSqliteKeyStore(KeyStoreContract):
    @pytest.fixture(autouse=True)
    def _file(self, tmp_path: Path) -> None:
        self.path = tmp_path / "keys.db"

    @contextlib.asynccontextmanager
    async def make_key_store(self) -> AsyncIterator[SqliteKeyStore]:
        keys = SqliteKeyStore(self.path)
        await keys.start()
        yield keys
        await keys.aclose()


class TestPostgresKeyStore(KeyStoreContract):
    @pytest.fixture(autouse=True)
    def _server(self, postgres_url: str) -> None:
        self.url = postgres_url

    @contextlib.asynccontextmanager
    async def make_key_store(self) -> AsyncIterator[PostgresKeyStore]:
        keys = PostgresKeyStore(self.url)
        await keys.start()
        try:
            yield keys
        finally:
            await keys.aclose()


def _race(kind: str, target: str, tmp_path: Path, processes: int = 3) -> list[dict[str, str]]:
    """Start processes that each make keys for the same 40 subjects at the same moment."""
    subjects = [f"customer:race-{uuid4().hex[:6]}-{n}" for n in range(40)]
    command = [sys.executable, "-m", "tests.keystore_race", kind, target, *subjects]
    running = [
        subprocess.Popen(
            command, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        for _ in range(processes)
    ]
    try:
        for process in running:
            assert process.stdout is not None
            assert process.stdout.readline().strip() == "ready"
        for process in running:
            assert process.stdin is not None
            process.stdin.write("go\n")
            process.stdin.flush()
        results = []
        for process in running:
            out, _ = process.communicate(timeout=60)
            assert process.returncode == 0
            results.append(json.loads(out))
    finally:
        for process in running:
            if process.poll() is None:
                process.kill()
    return results


def test_two_processes_making_a_subjects_key_at_once_end_with_one_key_sqlite(
    tmp_path: Path,
) -> None:
    path = tmp_path / "keys.db"
    asyncio.run(SqliteKeyStore(path).start())
    first, *others = _race("sqlite", str(path), tmp_path)
    assert all(other == first for other in others)
    with sqlite3.connect(path) as db:
        stored = dict(db.execute("SELECT subject, hex(key) FROM eventtape_subject_keys"))
    assert {s: k.lower() for s, k in stored.items()} == first


def test_two_processes_making_a_subjects_key_at_once_end_with_one_key_postgres(
    tmp_path: Path, postgres_url: str
) -> None:
    first, *others = _race("postgres", postgres_url, tmp_path)
    assert all(other == first for other in others)

    async def stored() -> dict[str, str]:
        import asyncpg

        connection = await asyncpg.connect(postgres_url)
        try:
            rows = await connection.fetch(
                "SELECT subject, key FROM eventtape_subject_keys WHERE subject = ANY($1)",
                list(first),
            )
        finally:
            await connection.close()
        return {row["subject"]: bytes(row["key"]).hex() for row in rows}

    assert asyncio.run(stored()) == first


def test_two_processes_making_a_subjects_key_at_once_end_with_one_key_jetstream(
    tmp_path: Path, nats_url: str
) -> None:
    bucket = f"KR{uuid4().hex[:8]}"
    first, *others = _race("jetstream", f"{nats_url}|{bucket}", tmp_path)
    assert all(other == first for other in others)


async def test_sqlite_forget_overwrites_the_key_bytes_in_the_file(tmp_path: Path) -> None:
    path = tmp_path / "keys.db"
    keys = SqliteKeyStore(path)
    await keys.start()
    key = await keys.key_for("customer:789")
    kept = await keys.key_for("customer:790")
    assert key in path.read_bytes()
    await keys.forget("customer:789")
    assert key not in path.read_bytes()  # secure_delete: not left in a free page
    assert kept in path.read_bytes()
    # A new store on the same file (another process) knows it was forgotten.
    again = SqliteKeyStore(path)
    await again.start()
    assert await again.existing_key("customer:789") is None
    assert await again.existing_key("customer:790") == kept


async def test_sql_key_stores_refuse_bad_settings_and_report_unreachable_servers(
    tmp_path: Path,
) -> None:
    bad_tables: list[Callable[[], Any]] = [
        lambda: SqliteKeyStore(tmp_path / "k.db", table="keys; DROP TABLE x"),
        lambda: SqliteKeyStore(":memory:"),
        lambda: PostgresKeyStore("postgresql://x/y", table="1keys"),
        lambda: PostgresKeyStore("mysql://x/y"),
    ]
    for make in bad_tables:
        with pytest.raises(InvalidArgument):
            make()
    with pytest.raises(StoreUnavailable):
        await PostgresKeyStore("postgresql://nobody@127.0.0.1:1/none").start()
    directory = tmp_path / "a-directory"
    directory.mkdir()
    with pytest.raises(StoreUnavailable):
        await SqliteKeyStore(directory).start()
