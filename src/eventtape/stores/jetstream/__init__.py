"""The NATS JetStream event store (``pip install "eventtape[nats]"``).

Example:
    ```python
    store = await JetStreamEventStore.connect("nats://127.0.0.1:4222", registry)
    ```
"""

try:
    import nats as _nats  # noqa: F401
except ImportError as error:  # pragma: no cover - depends on the environment
    raise ImportError('the JetStream store needs nats-py: pip install "eventtape[nats]"') from error

from ._codec import MAX_EVENTS_PER_APPEND as MAX_EVENTS_PER_APPEND
from ._codec import POSITION_STRIDE as POSITION_STRIDE
from ._config import JetStreamConfig as JetStreamConfig
from ._keys import JetStreamKeyStore as JetStreamKeyStore
from ._leases import JetStreamLeases as JetStreamLeases
from ._provision import MINIMUM_SERVER as MINIMUM_SERVER
from ._snapshots import JetStreamSnapshotStore as JetStreamSnapshotStore
from ._store import JetStreamEventStore as JetStreamEventStore
from ._subscription import JetStreamSubscription as JetStreamSubscription

__all__ = [
    "MAX_EVENTS_PER_APPEND",
    "MINIMUM_SERVER",
    "POSITION_STRIDE",
    "JetStreamConfig",
    "JetStreamEventStore",
    "JetStreamKeyStore",
    "JetStreamLeases",
    "JetStreamSnapshotStore",
    "JetStreamSubscription",
]
