"""Personal data in events: which fields, whose they are, and where their keys live (the port).

Mark a field personal with ``Annotated[str, Personal]`` and say whose data the event holds
with ``__data_subject__``, a template over the event's fields::

    class CustomerRegistered(Event):
        __data_subject__ = "customer:{customer_id}"

        customer_id: str
        name: Annotated[str, Personal]
        email: Annotated[str, Personal]

:class:`eventtape.privacy.PrivateEventStore` encrypts those fields with the subject's key at
append and decrypts them at read; ``forget(subject)`` destroys the key, after which every read
shows :data:`FORGOTTEN` in their place and nothing else changes.
"""

from __future__ import annotations

import functools
import string
import types
import typing
from typing import Any, Final, Protocol

from .errors import EventRegistrationError, InvalidArgument
from .events import Event

__all__ = [
    "CIPHERTEXT_PREFIX",
    "ENCRYPTED",
    "FORGOTTEN",
    "KeyStore",
    "Personal",
    "PersonalFields",
    "check_subject",
    "mask_ciphertext",
    "personal_fields",
]

FORGOTTEN: Final = "[forgotten]"
"""What a personal field reads as once its data subject has been forgotten."""

ENCRYPTED: Final = "[encrypted]"
"""What a personal field shows as in tools that never decrypt (the ``eventtape`` CLI)."""

CIPHERTEXT_PREFIX: Final = "eventtape:aesgcm:v1:"
"""How a stored personal field's value starts (storage format: see ``eventtape.privacy``)."""


def mask_ciphertext(value: Any) -> Any:
    """``value`` with every stored ciphertext in it (nested too) replaced by :data:`ENCRYPTED`."""
    if isinstance(value, str):
        return ENCRYPTED if value.startswith(CIPHERTEXT_PREFIX) else value
    if isinstance(value, dict):
        return {key: mask_ciphertext(item) for key, item in value.items()}
    if isinstance(value, list):
        return [mask_ciphertext(item) for item in value]
    return value


class _PersonalMarker:
    """The type of :data:`Personal` (one instance, used as ``Annotated`` metadata)."""

    _instance: _PersonalMarker | None = None

    def __new__(cls) -> _PersonalMarker:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "Personal"


Personal: Final = _PersonalMarker()
"""Marks a ``str`` field as personal data: ``name: Annotated[str, Personal]``."""


class PersonalFields(typing.NamedTuple):
    """What :func:`personal_fields` found on an event class."""

    fields: tuple[str, ...]
    """The personal fields, in declaration order."""
    subject: str
    """The ``__data_subject__`` template."""

    def subject_of(self, event: Event) -> str:
        """The data subject an event's personal fields belong to."""
        return self.subject.format_map({name: getattr(event, name) for name in _names(self)})


def _names(found: PersonalFields) -> tuple[str, ...]:
    return tuple(name for _, name, _, _ in string.Formatter().parse(found.subject) if name)


MAX_SUBJECT_LENGTH: Final = 256
"""Longest data subject, in characters (it names a key; it is not personal data itself)."""


def _bare(annotation: Any) -> Any:
    """``Annotated[T, ...]`` -> ``T``."""
    while typing.get_origin(annotation) is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
    return annotation


def _is_optional_str(annotation: Any) -> bool:
    annotation = _bare(annotation)
    if annotation is str:
        return True
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return {_bare(arg) for arg in typing.get_args(annotation)} == {str, type(None)}
    return False


def _marks(annotation: Any) -> list[Any]:
    """Every ``Annotated`` metadata item anywhere inside ``annotation`` (e.g. in a union)."""
    found: list[Any] = []
    if typing.get_origin(annotation) is typing.Annotated:
        found.extend(annotation.__metadata__)
    for arg in typing.get_args(annotation):
        found.extend(_marks(arg))
    return found


def check_subject(subject: object) -> str:
    """Return ``subject`` if it can name a data subject's key, else raise ``InvalidArgument``."""
    if not isinstance(subject, str) or not subject:
        raise InvalidArgument(f"a data subject is a non-empty str, not {subject!r}")
    if len(subject) > MAX_SUBJECT_LENGTH or not subject.isprintable():
        shown = subject if len(subject) <= 60 else subject[:60] + "…"
        raise InvalidArgument(
            f"data subject {shown!r} must be printable text of at most {MAX_SUBJECT_LENGTH}"
            " characters"
        )
    return subject


@functools.cache
def personal_fields(event_type: type[Event]) -> PersonalFields | None:
    """Return an event class's personal fields and subject template (``None`` if it has none).

    Raises:
        EventRegistrationError: If the class marks personal fields but names no data subject,
            names one from fields it lacks or that are themselves personal, or marks a field
            that is not a ``str`` (only text is encrypted in place).
    """
    marks = {
        name: [*info.metadata, *_marks(info.annotation)]
        for name, info in event_type.model_fields.items()
    }
    fields = tuple(name for name, found in marks.items() if any(m is Personal for m in found))
    if not fields:
        return None
    where = event_type.__qualname__
    for name in fields:
        if not _is_optional_str(event_type.model_fields[name].annotation):
            raise EventRegistrationError(
                f"{where}.{name} is marked Personal but is not a str: only text fields can be"
                " encrypted in place"
            )
        others = [m for m in marks[name] if m is not Personal]
        if others:
            raise EventRegistrationError(
                f"{where}.{name} is marked Personal and constrained ({others!r}): stored"
                " encrypted, its value cannot meet the constraint; check it in the command"
            )
    template = getattr(event_type, "__data_subject__", None)
    if not isinstance(template, str) or not template:
        raise EventRegistrationError(
            f"{where} has personal fields {fields} but no __data_subject__ naming whose they"
            ' are, e.g. __data_subject__ = "customer:{customer_id}"'
        )
    found = PersonalFields(fields, template)
    for name in _names(found):
        if name not in event_type.model_fields:
            raise EventRegistrationError(f"{where}.__data_subject__ names no field {name!r}")
        if name in fields:
            raise EventRegistrationError(
                f"{where}.__data_subject__ uses {name!r}, a personal field: the subject must"
                " stay readable after it is forgotten"
            )
    return found


class KeyStore(Protocol):
    """Where the per-subject keys live: never in the event log.

    Implementations: :class:`eventtape.privacy.InMemoryKeyStore` (tests),
    :class:`eventtape.stores.jetstream.JetStreamKeyStore` (a JetStream key-value bucket).
    """

    async def key_for(self, subject: str) -> bytes:
        """Return the subject's key, creating it if there is none yet.

        Raises:
            eventtape.SubjectForgotten: If the subject was forgotten (no new data for it).
        """
        ...

    async def existing_key(self, subject: str) -> bytes | None:
        """Return the subject's key, or ``None`` if it was forgotten or never made."""
        ...

    async def forget(self, subject: str) -> None:
        """Destroy the subject's key for good (idempotent)."""
        ...
