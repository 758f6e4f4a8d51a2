"""Test helpers: the event store contract suite and given/when/then for aggregates.

Needs the ``testing`` extra (``pip install "eventtape[testing]"``): pytest and hypothesis.
"""

from ._contract import EventStoreContract as EventStoreContract
from ._dcb_contract import DcbContract as DcbContract
from ._keystore_contract import KeyStoreContract as KeyStoreContract
from ._model import store_model_machine as store_model_machine
from ._scenario import AggregateScenario as AggregateScenario
from ._support import ContractNoteAdded as ContractNoteAdded
from ._support import ContractValueSet as ContractValueSet
from ._support import StoreFactory as StoreFactory
from ._support import contract_registry as contract_registry

__all__ = [
    "AggregateScenario",
    "ContractNoteAdded",
    "ContractValueSet",
    "DcbContract",
    "EventStoreContract",
    "KeyStoreContract",
    "StoreFactory",
    "contract_registry",
    "store_model_machine",
]
