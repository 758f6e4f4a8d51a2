"""Personal data you can forget: fields encrypted per data subject, erased by destroying a key.

Needs the ``crypto`` extra (``cryptography``). See the privacy guide.
"""

from .._core.privacy import ENCRYPTED as ENCRYPTED
from .._core.privacy import FORGOTTEN as FORGOTTEN
from .._core.privacy import KeyStore as KeyStore
from .._core.privacy import Personal as Personal
from ._keys import InMemoryKeyStore as InMemoryKeyStore
from ._snapshots import PrivateSnapshotStore as PrivateSnapshotStore
from ._store import PrivateEventStore as PrivateEventStore

__all__ = [
    "ENCRYPTED",
    "FORGOTTEN",
    "InMemoryKeyStore",
    "KeyStore",
    "Personal",
    "PrivateEventStore",
    "PrivateSnapshotStore",
]
