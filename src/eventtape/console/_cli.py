"""``eventtape console``: serve the console against a JetStream store (or a demo in memory).

Kept free of web imports at module level, so the command line loads without the extra.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

__all__ = ["add_console_parser"]


def add_console_parser(commands: Any) -> None:
    """Add the ``console`` subcommand to the ``eventtape`` parser's subcommands."""
    env = os.environ.get
    console = commands.add_parser("console", help="the web console (needs eventtape[console])")
    console.add_argument("--registry", default=env("EVENTTAPE_REGISTRY"), help="module:registry")
    console.add_argument(
        "--aggregate",
        action="append",
        default=[],
        metavar="CATEGORY=module:Class",
        help="show state before/after each event of this category's streams",
    )
    console.add_argument(
        "--tokens-file",
        default=env("EVENTTAPE_CONSOLE_TOKENS"),
        required=not env("EVENTTAPE_CONSOLE_TOKENS"),
        help='JSON {"token": "admin:name" | "user:id"}',
    )
    console.add_argument(
        "--audit-db",
        default=env("EVENTTAPE_CONSOLE_AUDIT_DB"),
        help="SQLite path or postgresql:// URL for the audit projection (finds by actor etc.)",
    )
    console.add_argument("--host", default="127.0.0.1")
    console.add_argument("--port", type=int, default=8700)
    console.set_defaults(run=_serve)


def _load(spec: str) -> Any:
    import importlib

    module, _, name = spec.partition(":")
    return getattr(importlib.import_module(module), name)


async def _serve(args: argparse.Namespace, out: Any) -> None:
    try:
        import uvicorn
    except ImportError as error:  # pragma: no cover - depends on the installed extras
        raise SystemExit('eventtape console needs: pip install "eventtape[console]"') from error
    from .._core.registry import EventRegistry
    from .._projections.runner import ProjectionRunner
    from ..stores.jetstream import JetStreamConfig, JetStreamEventStore
    from . import ConsoleSettings, create_console_app
    from ._audit import AuditProjection

    registry = _load(args.registry) if args.registry else EventRegistry()
    tokens = json.loads(Path(args.tokens_file).read_text())  # noqa: ASYNC240 - once, at start
    aggregates = {}
    for item in args.aggregate:
        category, _, spec = item.partition("=")
        aggregates[category] = _load(spec)
    config = JetStreamConfig(stream=args.stream, subject_prefix=args.subject_prefix)
    store = await JetStreamEventStore.connect(args.url, registry, config=config)
    runner: Any = None
    sink: Any = None
    postgres = bool(args.audit_db and args.audit_db.startswith("postgres"))
    try:
        if args.audit_db:
            if postgres:
                from ..sinks.postgres import PostgresSink

                sink = PostgresSink(args.audit_db)
            else:
                from ..sinks.sqlite import SqliteSink

                sink = SqliteSink(args.audit_db)
            runner = ProjectionRunner(store, sink, [AuditProjection(postgres)])
            await runner.start()
        app = create_console_app(
            ConsoleSettings(
                store=store,
                tokens=tokens,
                aggregates=aggregates,
                projections=runner,
                audit_sink=sink,
                audit_postgres=postgres,
            )
        )
        server = uvicorn.Server(uvicorn.Config(app, host=args.host, port=args.port))
        await server.serve()
    finally:
        if runner is not None:
            await runner.aclose()
        if sink is not None:
            await sink.aclose()
        await store.aclose()
