"""Create or verify the event stream, and refuse servers too old for what the store uses."""

from __future__ import annotations

from typing import Any

from nats.aio.client import Client
from nats.js.api import DiscardPolicy, RePublish, StorageType, StreamConfig
from nats.js.errors import NotFoundError

from ..._core.errors import StoreConfigurationError, StoreUnavailable
from ._config import JetStreamConfig

__all__ = ["MINIMUM_SERVER", "provision_stream"]

MINIMUM_SERVER = (2, 12, 0)
"""Batched direct gets (ADR-31) need 2.11; 2.12 is the oldest release tested."""


def stream_config(config: JetStreamConfig) -> StreamConfig:
    """Return the JetStream stream configuration for ``config``."""
    return StreamConfig(
        name=config.stream,
        description="eventtape event store: one subject per event stream, one message per append",
        subjects=[f"{config.subject_prefix}.>"],
        storage=StorageType.FILE if config.storage == "file" else StorageType.MEMORY,
        num_replicas=config.replicas,
        duplicate_window=config.duplicate_window,
        max_bytes=config.max_bytes,
        discard=DiscardPolicy.NEW,
        allow_direct=True,
        deny_delete=config.deny_delete,
        deny_purge=config.deny_purge,
        # Headers of each stored message, republished once stored: subscriptions wake on them.
        republish=RePublish(
            src=f"{config.subject_prefix}.>", dest=f"{config.wake_prefix}.>", headers_only=True
        ),
    )


async def provision_stream(nc: Client, config: JetStreamConfig) -> None:
    """Create the stream, or check an existing one matches ``config``.

    Raises:
        StoreConfigurationError: If the server is older than :data:`MINIMUM_SERVER`, or the
            existing stream differs in a setting the store depends on.
        StoreUnavailable: If JetStream does not answer.
    """
    version = nc.connected_server_version
    found = (version.major, version.minor, version.patch)
    if found < MINIMUM_SERVER:
        raise StoreConfigurationError(
            f"nats-server {'.'.join(map(str, found))} is too old: eventtape needs "
            f"{'.'.join(map(str, MINIMUM_SERVER))} or newer (batched direct gets, ADR-31)"
        )
    js = nc.jetstream(timeout=config.request_timeout)
    wanted = stream_config(config)
    try:
        info = await js.stream_info(config.stream)
    except NotFoundError:
        if not config.create_stream:
            raise StoreConfigurationError(
                f"the JetStream stream {config.stream!r} does not exist, and this store may not"
                " create it (create_stream=False): if it held events, they were lost (restore"
                " it); for a new deployment, create it once with create_stream=True"
            ) from None
        await js.add_stream(wanted)
        return
    except Exception as error:
        raise StoreUnavailable(f"JetStream did not answer: {error!r}") from error
    _check(info.config, wanted)


def _check(actual: StreamConfig, wanted: StreamConfig) -> None:
    problems: list[str] = []

    def differs(name: str, have: Any, want: Any) -> None:
        if have != want:
            problems.append(f"{name} is {have!r}, the store needs {want!r}")

    subjects = actual.subjects or []
    if wanted.subjects and wanted.subjects[0] not in subjects:
        problems.append(f"subjects {subjects!r} do not include {wanted.subjects[0]!r}")
    differs("allow_direct", bool(actual.allow_direct), True)
    differs("storage", actual.storage, wanted.storage)
    differs("num_replicas", actual.num_replicas, wanted.num_replicas)
    differs("discard", actual.discard, DiscardPolicy.NEW)
    have = actual.republish.dest if actual.republish else None
    want = wanted.republish.dest if wanted.republish else None
    differs("republish destination", have, want)
    if problems:
        raise StoreConfigurationError(
            f"stream {wanted.name!r} exists with other settings: " + "; ".join(problems)
        )
