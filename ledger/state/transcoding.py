"""A faster JSON transcoder for the state's stored events, with the same bytes.

eventsourcing's :class:`~eventsourcing.persistence.JSONTranscoder` encodes with
the standard library and calls back into Python for every datetime, UUID and
:class:`~ledger.state.domain.Provenance`: most of the cost of recording a batch.
:class:`FastJSONTranscoder` walks an event's state once in Python, wrapping the
registered types exactly as ``JSONTranscoder`` does (``{"_type_": name,
"_data_": ...}``), and lets msgspec write the JSON. Its bytes are those of
``JSONTranscoder`` (compact separators, UTF-8 unescaped, keys in insertion
order): stores written by either read back with either, and the state digest
does not depend on which one wrote them.

Where msgspec would write something else (floats print their exponents
differently; integers beyond 64 bits it refuses), the state is encoded by
``JSONTranscoder`` itself. Decoding goes the other way: msgspec parses, one walk
unwraps the registered types, bottom up as ``JSONTranscoder``'s object hook does.
"""

from __future__ import annotations

from typing import Any, cast
from uuid import UUID

import msgspec
from eventsourcing.domain import DomainEventProtocol
from eventsourcing.persistence import (
    DatetimeAsISO,
    DecimalAsStr,
    JSONTranscoder,
    Mapper,
    StoredEvent,
    Transcoding,
    UUIDAsHex,
)
from eventsourcing.utils import get_topic

from ledger.state.domain import RECORD_TOPIC, EventRecord

__all__ = ["FastJSONTranscoder", "StateMapper"]

_INT64 = (-(2**63), 2**64 - 1)


class _Fallback(Exception):
    """A value msgspec would write differently than the standard library."""


class FastJSONTranscoder(JSONTranscoder):
    """``JSONTranscoder``'s format, written and read by msgspec."""

    def __init__(self) -> None:
        super().__init__()
        self._encoder = msgspec.json.Encoder()
        self._decoder = msgspec.json.Decoder()
        #: Types whose transcodings encode to strings and integers only, which
        #: need no walk (an integer msgspec refuses still falls back).
        self._plain: set[type] = set()

    def register(self, transcoding: Transcoding) -> None:
        super().register(transcoding)
        if type(transcoding) in (UUIDAsHex, DecimalAsStr, DatetimeAsISO) or getattr(
            transcoding, "plain_json", False
        ):
            self._plain.add(transcoding.type)
        else:
            self._plain.discard(transcoding.type)

    def encode(self, obj: Any) -> bytes:
        try:
            return self._encoder.encode(self._prepare(obj))
        except (_Fallback, msgspec.EncodeError, OverflowError, TypeError, UnicodeError):
            # The standard library's bytes (or its exception, for what it
            # cannot encode either).
            return super().encode(obj)

    def _prepare(self, o: Any) -> Any:
        """``o`` with every registered type wrapped as ``JSONTranscoder`` does."""
        t = type(o)
        if t is dict:
            return self._prepare_dict(o)
        if t is str or t is bool or o is None:
            return o
        if t is int:
            if not _INT64[0] <= o <= _INT64[1]:
                raise _Fallback
            return o
        if t is list or t is tuple:
            prepare = self._prepare
            return [prepare(v) for v in o]
        transcoding = self.types.get(t)
        if transcoding is None:
            raise _Fallback  # floats, and what JSONTranscoder refuses
        data = transcoding.encode(o)
        if t not in self._plain:
            data = self._prepare(data)
        return {"_type_": transcoding.name, "_data_": data}

    def _prepare_dict(self, o: dict[Any, Any]) -> dict[str, Any]:
        out = {}
        for k, v in o.items():
            if type(k) is not str:
                raise _Fallback  # the standard library's key conversions
            t = type(v)
            if t is str or t is bool or v is None or (t is int and _INT64[0] <= v <= _INT64[1]):
                out[k] = v
            else:
                out[k] = self._prepare(v)
        return out

    def decode(self, data: bytes) -> Any:
        try:
            parsed = self._decoder.decode(data)
        except msgspec.DecodeError:
            return super().decode(data)
        return self._restore(parsed)

    def _restore(self, o: Any) -> Any:
        t = type(o)
        if t is dict:
            restore = self._restore
            d = {}
            for k, v in o.items():
                tv = type(v)
                d[k] = restore(v) if tv is dict or tv is list else v
            if len(d) == 2 and "_type_" in d:
                return self._decode_obj(d)
            return d
        if t is list:
            restore = self._restore
            return [restore(v) if type(v) in (dict, list) else v for v in o]
        return o


class StateMapper(Mapper[UUID]):
    """eventsourcing's ``Mapper`` whose ``to_stored_event`` remembers each event
    class's topic and class version (``get_topic`` and ``getattr`` per event were
    a fifth of the cost of mapping one). The same stored events; with a cipher or
    a compressor, eventsourcing's own path.

    An :class:`~ledger.state.domain.EventRecord` is stored as itself (its own
    compact JSON, topic :data:`~ledger.state.domain.RECORD_TOPIC`) and read back
    as itself."""

    _classes: dict[type, tuple[str, int]]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._classes = {}

    def to_stored_event(self, domain_event: DomainEventProtocol[UUID]) -> StoredEvent:
        record: object = domain_event
        if type(record) is EventRecord:
            return StoredEvent(record.id, 1, RECORD_TOPIC, self._sealed(record.stored_state()))
        if self.compressor is not None or self.cipher is not None:
            return super().to_stored_event(domain_event)
        cls = type(domain_event)
        known = self._classes.get(cls)
        if known is None:
            known = self._classes[cls] = (get_topic(cls), getattr(cls, "class_version", 1))
        topic, class_version = known
        state = dict(domain_event.__dict__)
        originator_id = state.pop("originator_id")
        originator_version = state.pop("originator_version")
        if class_version > 1:
            state["class_version"] = class_version
        return StoredEvent(originator_id, originator_version, topic, self.transcoder.encode(state))

    def to_domain_event(self, stored_event: StoredEvent) -> DomainEventProtocol[UUID]:
        if stored_event.topic != RECORD_TOPIC:
            return super().to_domain_event(stored_event)
        state = stored_event.state
        if self.cipher:
            state = self.cipher.decrypt(state)
        if self.compressor:
            state = self.compressor.decompress(state)
        oid = stored_event.originator_id
        record = EventRecord.from_stored(oid if isinstance(oid, UUID) else UUID(oid), state)
        return cast("DomainEventProtocol[UUID]", record)

    def _sealed(self, state: bytes) -> bytes:
        """``state`` compressed and encrypted as the mapper's settings say."""
        if self.compressor:
            state = self.compressor.compress(state)
        if self.cipher:
            state = self.cipher.encrypt(state)
        return state
