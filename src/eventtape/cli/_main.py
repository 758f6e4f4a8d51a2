"""The ``eventtape`` command line: answer "who did what, when" against a JetStream store.

Exit codes: 0 success, 1 ``verify`` found a broken link or removed messages, 2 bad usage,
3 not found (unknown stream, projection, saga), 4 the server cannot be reached or does not
answer, 5 the stream or sink is not set up as expected.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import json
import os
import sqlite3
import sys
from collections.abc import Sequence
from typing import Any

from .._core.errors import (
    AggregateNotFound,
    EventtapeError,
    InvalidArgument,
    InvalidStreamId,
    StoreConfigurationError,
    StoreUnavailable,
    StreamNotFound,
)
from .._core.privacy import mask_ciphertext
from .._core.wire import (
    CHECKPOINTS_TABLE,
    DEFAULT_STREAM,
    DEFAULT_SUBJECT_PREFIX,
    OWNER_TOKEN_COLUMN,
    PARKED_TABLE,
    SAGA_CLAIMED_PARTITION,
    SAGA_DONE_PARTITION,
    SAGA_PARKED_PARTITION,
)
from ..console._cli import add_console_parser

__all__ = ["main"]

EXIT_OK, EXIT_USAGE, EXIT_NOT_FOUND, EXIT_UNAVAILABLE, EXIT_CONFIG = 0, 2, 3, 4, 5
EXIT_TAMPERED = 1


def safe(value: object) -> str:
    """Text that cannot drive the operator's terminal: every non-printable character escaped.

    Event data is written by whoever could append; a reason holding ``ESC [2J`` or a bidi
    override must show as text, not clear the screen, retitle the window or reorder the line.
    Control characters (C0, C1, DEL), format characters (bidi overrides, zero-width ones) and
    line or paragraph separators become ``\\xNN`` / ``\\uNNNN``; printable text, other
    scripts and emoji stay as they are.
    """
    text = value if isinstance(value, str) else str(value)
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else ascii(ch)[1:-1] for ch in text)


class CliError(Exception):
    """An error to print in one line, with its exit code."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


def _load(spec: str) -> Any:
    """Import ``module:attribute``, finding modules in the current directory as ``python -m`` does.

    A console script's ``sys.path`` starts with its own bin directory, not the working
    directory, so ``--aggregate examples.order_shop.domain:Order`` would need ``PYTHONPATH=.``.
    """
    module_name, _, attribute = spec.partition(":")
    if not attribute:
        raise CliError(f"{spec!r} must look like package.module:name", EXIT_USAGE)
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.append(os.getcwd())  # after everything else: never shadows an installed module
    try:
        value = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as error:
        raise CliError(f"cannot import {spec!r}: {error}", EXIT_USAGE) from error
    return value() if callable(value) and not isinstance(value, type) else value


class Output:
    """Tables and colours for people (with rich, on a terminal), plain lines when piped."""

    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json
        self.console: Any = None
        if not as_json and sys.stdout.isatty():
            try:
                from rich.console import Console

                self.console = Console()
            except ImportError:  # rich is optional: plain output then
                self.console = None

    def table(self, title: str, columns: list[str], rows: list[list[Any]]) -> None:
        if self.as_json:
            print(json.dumps([dict(zip(columns, row, strict=True)) for row in rows], default=str))
            return
        if self.console is not None:
            from rich.table import Table
            from rich.text import Text

            table = Table(title=Text(safe(title)))
            for column in columns:
                table.add_column(column)
            for row in rows:
                # Text, not str: rich would read "[red]" in event data as markup.
                table.add_row(*(Text(safe(value)) for value in row))
            self.console.print(table)
            return
        print("\t".join(columns))
        for row in rows:
            print("\t".join(safe(value) for value in row))

    def record(self, data: dict[str, Any], line: str) -> None:
        if self.as_json:
            print(json.dumps(data, default=str), flush=True)
        elif self.console is not None:
            self.console.print(safe(line), markup=False, highlight=False)
        else:
            print(safe(line), flush=True)


async def _connect(args: argparse.Namespace) -> Any:
    from ..stores.jetstream import JetStreamConfig
    from ..stores.jetstream._raw import RawReader

    async def quiet(*_: Any) -> None:
        """nats-py's default callbacks log every failed attempt with a traceback."""

    options: dict[str, Any] = {
        "connect_timeout": 2,
        "max_reconnect_attempts": 1,
        "allow_reconnect": False,
        "error_cb": quiet,
        "disconnected_cb": quiet,
        "closed_cb": quiet,
    }
    if args.creds:
        options["user_credentials"] = args.creds
    config = JetStreamConfig(stream=args.stream, subject_prefix=args.subject_prefix)
    try:
        import nats

        nc = await nats.connect(args.url, **options)
    except Exception as error:
        raise CliError(
            f"cannot connect to NATS at {args.url}: {error}", EXIT_UNAVAILABLE
        ) from error
    reader = RawReader(nc, config)
    try:
        await reader.start()
    except BaseException:
        await nc.close()
        raise
    return reader


def _summary(data: dict[str, Any], width: int = 60) -> str:
    text = ", ".join(f"{key}={value}" for key, value in data.items())
    return text if len(text) <= width else text[: width - 1] + "…"


async def _history(args: argparse.Namespace, out: Output) -> None:
    reader = await _connect(args)
    try:
        # The CLI never decrypts: personal fields show as "[encrypted]", forgotten or not.
        entries = [mask_ciphertext(entry) for entry in await reader.history(args.stream_id)]
        if args.at_version is not None:
            await _state_at(args, out, entries)
            return
        rows = [
            [e["version"], e["recorded_at"], e["type"], e["actor"], _summary(e["data"])]
            for e in entries
        ]
        if out.as_json:
            print(json.dumps(entries, default=str))
        else:
            out.table(args.stream_id, ["version", "time", "type", "actor", "data"], rows)
    finally:
        await reader.close()


async def _state_at(args: argparse.Namespace, out: Output, entries: list[dict[str, Any]]) -> None:
    if not args.aggregate or not args.registry:
        raise CliError("--at-version needs --aggregate and --registry (module:name)", EXIT_USAGE)
    aggregate_type = _load(args.aggregate)
    registry = _load(args.registry)
    if args.at_version < 1 or args.at_version > len(entries):
        raise CliError(
            f"{args.stream_id} has versions 1 to {len(entries)}, not {args.at_version}",
            EXIT_NOT_FOUND,
        )
    aggregate = aggregate_type(args.stream_id.partition("-")[2])
    aggregate.replay(
        registry.decode(e["type"], e["schema"], e["data"]) for e in entries[: args.at_version]
    )
    state = aggregate.to_snapshot()
    if out.as_json:
        print(json.dumps({"version": args.at_version, "state": state}, default=str))
    else:
        out.table(
            f"{args.stream_id} at version {args.at_version}",
            ["field", "value"],
            [[key, value] for key, value in state.items()],
        )


async def _tail(args: argparse.Namespace, out: Output) -> None:
    reader = await _connect(args)
    shown = 0
    try:
        async with contextlib.aclosing(reader.follow(args.from_position, args.category)) as events:
            async for e in events:
                e = mask_ciphertext(e)  # personal fields show as "[encrypted]"
                out.record(
                    e,
                    f"{e['position']:>10}  {e['recorded_at']}  {e['stream_id']} v{e['version']}  "
                    f"{e['type']}  by {e['actor']}  {_summary(e['data'])}",
                )
                shown += 1
                if args.limit and shown >= args.limit:
                    return
    finally:
        await reader.close()


async def _streams(args: argparse.Namespace, out: Output) -> None:
    reader = await _connect(args)
    try:
        streams = await reader.streams(args.category, args.limit)
        out.table(
            "streams",
            ["stream", "version", "last event"],
            [[s["stream_id"], s["version"], s["last_recorded_at"]] for s in streams],
        )
    finally:
        await reader.close()


async def _info(args: argparse.Namespace, out: Output) -> None:
    reader = await _connect(args)
    try:
        info = await reader.info()
        if out.as_json:
            print(json.dumps(info, default=str))
        else:
            out.table("store", ["setting", "value"], [[k, v] for k, v in info.items()])
    finally:
        await reader.close()


def _chain_key(path: str | None) -> Any:
    from .._core.chain import HashChain

    if not path:
        return HashChain()
    try:
        with open(path, "rb") as file:
            key = file.read(4097)
    except OSError as error:
        raise CliError(f"cannot read the chain key file {path}: {error}", EXIT_USAGE) from None
    if len(key) > 4096:
        raise CliError(f"{path} is not a chain key: longer than 4096 bytes", EXIT_USAGE)
    return HashChain(key)  # too short: InvalidArgument, a usage error


async def _verify(args: argparse.Namespace, out: Output) -> int:
    from .._core.chain import verify

    if (args.stream_id is None) == (not args.all):
        raise CliError("give a stream id or --all (not both)", EXIT_USAGE)
    chain = _chain_key(args.key_file)
    reader = await _connect(args)
    try:
        result = await verify(reader, args.stream_id, chain=chain, require_chain=args.require_chain)
    finally:
        await reader.close()
    rows = []
    for report in result.streams:
        broken = report.broken
        rows.append(
            [
                report.stream_id,
                report.events,
                report.unchained_up_to,
                report.head_version,
                "ok"
                if broken is None
                else f"BROKEN at version {broken.version}: {broken.kind}: {broken.detail}",
                report.head_link or "-",
            ]
        )
    if out.as_json:
        print(
            json.dumps(
                {
                    "ok": result.ok,
                    "events": result.events,
                    "removed_messages": [list(span) for span in result.removed_messages],
                    "streams": [
                        {
                            "stream_id": report.stream_id,
                            "events": report.events,
                            "unchained_up_to": report.unchained_up_to,
                            "head_version": report.head_version,
                            "head_link": report.head_link,
                            "broken": None
                            if report.broken is None
                            else {
                                "version": report.broken.version,
                                "position": report.broken.position,
                                "kind": report.broken.kind,
                                "detail": report.broken.detail,
                            },
                        }
                        for report in result.streams
                    ],
                }
            )
        )
    else:
        shown = rows
        if args.all and not args.verbose:
            shown = [row for row in rows if row[4] != "ok" or row[2]]
        out.table(
            "chain",
            ["stream", "events", "unchained up to", "head version", "result", "head link"],
            shown,
        )
        for first, last in result.removed_messages:
            span = f"message {first}" if first == last else f"messages {first} to {last}"
            print(f"REMOVED: {span} of the JetStream stream (deleted or purged)")
        broken_count = sum(1 for report in result.streams if not report.ok)
        print(
            f"{'OK' if result.ok else 'TAMPERED'}: {len(result.streams)} stream(s),"
            f" {result.events} event(s), {broken_count} broken,"
            f" {len(result.removed_messages)} removed range(s)"
        )
    return EXIT_OK if result.ok else EXIT_TAMPERED


def _sink(url: str) -> Any:
    if url.startswith(("postgres://", "postgresql://")):
        from ..sinks.postgres import PostgresSink

        schema = os.environ.get("EVENTTAPE_SINK_SCHEMA", "public")
        return PostgresSink(url, schema=schema)
    from ..sinks.sqlite import SqliteSink

    path = url.removeprefix("sqlite:///").removeprefix("sqlite://")
    if not os.path.isfile(path):
        raise CliError(f"no SQLite database at {path}", EXIT_NOT_FOUND)
    # Look before opening it as a sink, which would create eventtape's tables in whatever
    # file it is pointed at: these commands only read.
    try:
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
            found = db.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?",
                (CHECKPOINTS_TABLE,),
            ).fetchone()
    except sqlite3.Error as error:
        raise CliError(f"{path} is not a usable SQLite database: {error}", EXIT_CONFIG) from None
    if found is None:
        raise CliError(f"{path} holds no eventtape checkpoints", EXIT_CONFIG)
    return SqliteSink(path)


async def _projections_status(args: argparse.Namespace, out: Output) -> None:
    categories: dict[str, Any] = {}
    if args.projections:
        categories = {p.name: p.categories for p in _load(args.projections)}
    sink = _sink(args.sink)
    reader = await _connect(args)
    try:
        await sink.start()
        head = await reader.head_position()
        rows = await sink.fetch(
            f"SELECT projection, partition, generation, position, updated_at, {OWNER_TOKEN_COLUMN}"
            f" FROM {CHECKPOINTS_TABLE} WHERE partition NOT IN"
            f" ('{SAGA_CLAIMED_PARTITION}', '{SAGA_DONE_PARTITION}')"
            " ORDER BY projection, partition"
        )
        table = []
        for name, partition, generation, position, updated, token in rows:
            # A projection over some categories keeps its checkpoint at the last event it was
            # given: events of other categories after it are not lag. Without the projections,
            # they cannot be told apart, and the count is an upper bound.
            known = name in categories
            lag = await reader.events_after(position, categories.get(name))
            shown = lag if known or out.as_json else f"<={lag}"
            owner = token if token else "-"  # 0: written by a runner that shares nothing
            table.append(
                [name, partition, generation, position, head, shown, known, owner, updated]
            )
        out.table(
            "projections",
            [
                "projection",
                "partition",
                "generation",
                "checkpoint",
                "head",
                "lag events",
                "lag exact",
                "owner token",
                "updated",
            ],
            table,
        )
    finally:
        await sink.aclose()
        await reader.close()


async def _projections_rebuild(args: argparse.Namespace, out: Output) -> None:
    from .._projections.runner import ProjectionRunner

    projections = _load(args.projections)
    wanted = [p for p in projections if p.name == args.name]
    if not wanted:
        raise CliError(f"no projection named {args.name!r} in {args.projections}", EXIT_NOT_FOUND)
    registry = _load(args.registry)
    sink = _sink(args.sink)
    from ..stores.jetstream import JetStreamConfig, JetStreamEventStore

    config = JetStreamConfig(stream=args.stream, subject_prefix=args.subject_prefix)
    try:
        store = await JetStreamEventStore.connect(args.url, registry, config=config)
    except StoreUnavailable as error:
        raise CliError(str(error), EXIT_UNAVAILABLE) from error
    try:
        async with ProjectionRunner(store, sink, wanted) as runner:
            head = await store.head_position()
            rebuilding = asyncio.create_task(runner.rebuild(args.name, blue_green=args.blue_green))
            await _progress(out, runner, args.name, head, rebuilding)
            await rebuilding
            await runner.wait_until(head, timeout=3600)
        out.record({"rebuilt": args.name, "position": head}, f"rebuilt {args.name} up to {head}")
    finally:
        await sink.aclose()
        await store.aclose()


async def _progress(out: Output, runner: Any, name: str, head: int, task: Any) -> None:
    if out.console is None:
        return
    from rich.progress import Progress

    with Progress(console=out.console, transient=True) as progress:
        bar = progress.add_task(f"rebuilding {name}", total=head or 1)
        while not task.done():
            (status,) = [s for s in await runner.status() if s.name == name]
            progress.update(bar, completed=status.checkpoint)
            await asyncio.sleep(0.2)


async def _sagas_list(args: argparse.Namespace, out: Output) -> None:
    sink = _sink(args.sink)
    reader = await _connect(args)
    try:
        await sink.start()
        if args.parked:
            rows = await sink.fetch(
                "SELECT projection, position, stream_id, event_type, error, parked_at"
                f" FROM {PARKED_TABLE} WHERE partition = '{SAGA_PARKED_PARTITION}'"
                " ORDER BY projection, position"
            )
            out.table(
                "parked",
                ["saga", "position", "stream", "event", "why", "parked at"],
                [list(r) for r in rows],
            )
            return
        rows = await sink.fetch(
            f"SELECT projection, partition, position FROM {CHECKPOINTS_TABLE}"
            f" WHERE partition IN ('{SAGA_CLAIMED_PARTITION}', '{SAGA_DONE_PARTITION}')"
            " ORDER BY projection, partition"
        )
        sagas: dict[str, dict[str, int]] = {}
        for saga, kind, position in rows:
            sagas.setdefault(saga, {})[kind] = position
        instances = await reader.unfinished_processes()
        out.table(
            "sagas",
            ["saga", "done", "claimed", "head", "in-flight processes"],
            [
                [
                    saga,
                    marks.get(SAGA_DONE_PARTITION, 0),
                    marks.get(SAGA_CLAIMED_PARTITION, 0),
                    await reader.head_position(),
                    ", ".join(instances.get(saga, [])) or "-",
                ]
                for saga, marks in sagas.items()
            ],
        )
    finally:
        await sink.aclose()
        await reader.close()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="eventtape", description=__doc__)
    env = os.environ.get
    parser.add_argument("--url", default=env("EVENTTAPE_NATS_URL", "nats://127.0.0.1:4222"))
    parser.add_argument(
        "--creds", default=env("EVENTTAPE_NATS_CREDS"), help="NATS credentials file"
    )
    parser.add_argument("--stream", default=env("EVENTTAPE_STREAM", DEFAULT_STREAM))
    parser.add_argument(
        "--subject-prefix", default=env("EVENTTAPE_SUBJECT_PREFIX", DEFAULT_SUBJECT_PREFIX)
    )
    parser.add_argument("--json", action="store_true", help="JSON for machines")
    commands = parser.add_subparsers(dest="command", required=True)

    history = commands.add_parser("history", help="a stream's timeline: who did what, when")
    history.add_argument("stream_id")
    history.add_argument("--at-version", type=int, help="show the aggregate's state then")
    history.add_argument("--aggregate", default=env("EVENTTAPE_AGGREGATE"), help="module:Class")
    history.add_argument("--registry", default=env("EVENTTAPE_REGISTRY"), help="module:registry")
    history.set_defaults(run=_history)

    tail = commands.add_parser("tail", help="follow events live")
    tail.add_argument("--category")
    tail.add_argument("--from-position", type=int, default=0, help="default: new events only")
    tail.add_argument("--limit", type=int, default=0, help="stop after this many events")
    tail.set_defaults(run=_tail)

    streams = commands.add_parser("streams", help="what is stored")
    streams.add_argument("--category")
    streams.add_argument("--limit", type=int, default=100)
    streams.set_defaults(run=_streams)

    info = commands.add_parser("info", help="the server, the stream, durability settings")
    info.set_defaults(run=_info)

    projections = commands.add_parser("projections", help="projection checkpoints and rebuilds")
    projection_commands = projections.add_subparsers(dest="projection_command", required=True)
    status = projection_commands.add_parser("status", help="checkpoint, head, lag")
    status.add_argument(
        "--sink", default=env("EVENTTAPE_SINK_URL"), required=not env("EVENTTAPE_SINK_URL")
    )
    status.add_argument(
        "--projections",
        default=env("EVENTTAPE_PROJECTIONS"),
        help="module:list of projections, to count lag only in their categories",
    )
    status.set_defaults(run=_projections_status)
    rebuild = projection_commands.add_parser("rebuild", help="rebuild one projection")
    rebuild.add_argument("name")
    rebuild.add_argument(
        "--sink", default=env("EVENTTAPE_SINK_URL"), required=not env("EVENTTAPE_SINK_URL")
    )
    rebuild.add_argument("--projections", required=True, help="module:list of projections")
    rebuild.add_argument("--registry", required=True, help="module:registry")
    rebuild.add_argument("--blue-green", action="store_true", help="no downtime")
    rebuild.set_defaults(run=_projections_rebuild)

    sagas = commands.add_parser("sagas", help="sagas in flight and parked")
    saga_commands = sagas.add_subparsers(dest="saga_command", required=True)
    listing = saga_commands.add_parser("list", help="checkpoints, in-flight processes")
    listing.add_argument(
        "--sink", default=env("EVENTTAPE_SINK_URL"), required=not env("EVENTTAPE_SINK_URL")
    )
    listing.add_argument("--parked", action="store_true", help="the events sagas gave up on")
    listing.set_defaults(run=_sagas_list)
    verify = commands.add_parser(
        "verify", help="check that the history stored is the history written (hash chain)"
    )
    verify.add_argument("stream_id", nargs="?")
    verify.add_argument("--all", action="store_true", help="every stream of the store")
    verify.add_argument(
        "--key-file",
        default=env("EVENTTAPE_CHAIN_KEY_FILE"),
        help="the HMAC key the store links with (the file's exact bytes)",
    )
    verify.add_argument(
        "--verbose", action="store_true", help="with --all, list intact streams too"
    )
    verify.add_argument(
        "--require-chain",
        action="store_true",
        help="events stored without links are a break, not 'unchained up to N'",
    )
    verify.set_defaults(run=_verify)
    add_console_parser(commands)
    return parser


def _fail(error: BaseException | str) -> None:
    print(f"eventtape: {safe(error)}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``eventtape`` command line; return its exit code."""
    args = _parser().parse_args(argv)
    out = Output(args.json)
    try:
        code = asyncio.run(args.run(args, out))
    except CliError as error:
        _fail(error)
        return error.code
    except (StreamNotFound, AggregateNotFound) as error:
        _fail(error)
        return EXIT_NOT_FOUND
    except (InvalidStreamId, InvalidArgument) as error:  # a bad --stream or --subject-prefix
        _fail(error)
        return EXIT_USAGE
    except StoreUnavailable as error:
        _fail(error)
        return EXIT_UNAVAILABLE
    except StoreConfigurationError as error:
        _fail(error)
        return EXIT_CONFIG
    except EventtapeError as error:
        _fail(error)
        return 1
    except BrokenPipeError:  # the reader went away (| head): stop quietly, as cat does
        with contextlib.suppress(OSError):
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - no flush error at exit
        return EXIT_OK
    except (sqlite3.Error, OSError) as error:  # a --sink that is not a usable database
        _fail(f"the sink cannot be used: {error}")
        return EXIT_UNAVAILABLE if isinstance(error, OSError) else EXIT_CONFIG
    except KeyboardInterrupt:
        return 130  # interrupted, as shells report it: not a success
    return code if isinstance(code, int) else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
