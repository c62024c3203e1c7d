from authz_ledger._proto.authzledger.v1 import ledger_pb2 as _ledger_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class GetEntryRequest(_message.Message):
    __slots__ = ("index", "decision_id")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    DECISION_ID_FIELD_NUMBER: _ClassVar[int]
    index: int
    decision_id: str
    def __init__(self, index: _Optional[int] = ..., decision_id: _Optional[str] = ...) -> None: ...

class Entry(_message.Message):
    __slots__ = ("index", "raw", "entry", "leaf_hash")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    RAW_FIELD_NUMBER: _ClassVar[int]
    ENTRY_FIELD_NUMBER: _ClassVar[int]
    LEAF_HASH_FIELD_NUMBER: _ClassVar[int]
    index: int
    raw: bytes
    entry: _ledger_pb2.LedgerEntry
    leaf_hash: bytes
    def __init__(self, index: _Optional[int] = ..., raw: _Optional[bytes] = ..., entry: _Optional[_Union[_ledger_pb2.LedgerEntry, _Mapping]] = ..., leaf_hash: _Optional[bytes] = ...) -> None: ...

class EntryFilter(_message.Message):
    __slots__ = ("since_unix_nano", "until_unix_nano", "outcome", "path_prefix", "principal")
    SINCE_UNIX_NANO_FIELD_NUMBER: _ClassVar[int]
    UNTIL_UNIX_NANO_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    PATH_PREFIX_FIELD_NUMBER: _ClassVar[int]
    PRINCIPAL_FIELD_NUMBER: _ClassVar[int]
    since_unix_nano: int
    until_unix_nano: int
    outcome: _ledger_pb2.Outcome
    path_prefix: str
    principal: str
    def __init__(self, since_unix_nano: _Optional[int] = ..., until_unix_nano: _Optional[int] = ..., outcome: _Optional[_Union[_ledger_pb2.Outcome, str]] = ..., path_prefix: _Optional[str] = ..., principal: _Optional[str] = ...) -> None: ...

class ListEntriesRequest(_message.Message):
    __slots__ = ("start_index", "end_index", "limit", "filter")
    START_INDEX_FIELD_NUMBER: _ClassVar[int]
    END_INDEX_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    start_index: int
    end_index: int
    limit: int
    filter: EntryFilter
    def __init__(self, start_index: _Optional[int] = ..., end_index: _Optional[int] = ..., limit: _Optional[int] = ..., filter: _Optional[_Union[EntryFilter, _Mapping]] = ...) -> None: ...

class TailRequest(_message.Message):
    __slots__ = ("start_index", "from_end", "filter")
    START_INDEX_FIELD_NUMBER: _ClassVar[int]
    FROM_END_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    start_index: int
    from_end: bool
    filter: EntryFilter
    def __init__(self, start_index: _Optional[int] = ..., from_end: _Optional[bool] = ..., filter: _Optional[_Union[EntryFilter, _Mapping]] = ...) -> None: ...

class GetCheckpointRequest(_message.Message):
    __slots__ = ("tree_size", "cosigned")
    TREE_SIZE_FIELD_NUMBER: _ClassVar[int]
    COSIGNED_FIELD_NUMBER: _ClassVar[int]
    tree_size: int
    cosigned: bool
    def __init__(self, tree_size: _Optional[int] = ..., cosigned: _Optional[bool] = ...) -> None: ...

class Checkpoint(_message.Message):
    __slots__ = ("origin", "tree_size", "root_hash", "note")
    ORIGIN_FIELD_NUMBER: _ClassVar[int]
    TREE_SIZE_FIELD_NUMBER: _ClassVar[int]
    ROOT_HASH_FIELD_NUMBER: _ClassVar[int]
    NOTE_FIELD_NUMBER: _ClassVar[int]
    origin: str
    tree_size: int
    root_hash: bytes
    note: bytes
    def __init__(self, origin: _Optional[str] = ..., tree_size: _Optional[int] = ..., root_hash: _Optional[bytes] = ..., note: _Optional[bytes] = ...) -> None: ...

class GetInclusionProofRequest(_message.Message):
    __slots__ = ("index", "tree_size")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    TREE_SIZE_FIELD_NUMBER: _ClassVar[int]
    index: int
    tree_size: int
    def __init__(self, index: _Optional[int] = ..., tree_size: _Optional[int] = ...) -> None: ...

class InclusionProof(_message.Message):
    __slots__ = ("index", "tree_size", "leaf_hash", "root_hash", "hashes", "checkpoint")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    TREE_SIZE_FIELD_NUMBER: _ClassVar[int]
    LEAF_HASH_FIELD_NUMBER: _ClassVar[int]
    ROOT_HASH_FIELD_NUMBER: _ClassVar[int]
    HASHES_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_FIELD_NUMBER: _ClassVar[int]
    index: int
    tree_size: int
    leaf_hash: bytes
    root_hash: bytes
    hashes: _containers.RepeatedScalarFieldContainer[bytes]
    checkpoint: bytes
    def __init__(self, index: _Optional[int] = ..., tree_size: _Optional[int] = ..., leaf_hash: _Optional[bytes] = ..., root_hash: _Optional[bytes] = ..., hashes: _Optional[_Iterable[bytes]] = ..., checkpoint: _Optional[bytes] = ...) -> None: ...

class GetConsistencyProofRequest(_message.Message):
    __slots__ = ("size1", "size2")
    SIZE1_FIELD_NUMBER: _ClassVar[int]
    SIZE2_FIELD_NUMBER: _ClassVar[int]
    size1: int
    size2: int
    def __init__(self, size1: _Optional[int] = ..., size2: _Optional[int] = ...) -> None: ...

class ConsistencyProof(_message.Message):
    __slots__ = ("size1", "root1", "size2", "root2", "hashes")
    SIZE1_FIELD_NUMBER: _ClassVar[int]
    ROOT1_FIELD_NUMBER: _ClassVar[int]
    SIZE2_FIELD_NUMBER: _ClassVar[int]
    ROOT2_FIELD_NUMBER: _ClassVar[int]
    HASHES_FIELD_NUMBER: _ClassVar[int]
    size1: int
    root1: bytes
    size2: int
    root2: bytes
    hashes: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, size1: _Optional[int] = ..., root1: _Optional[bytes] = ..., size2: _Optional[int] = ..., root2: _Optional[bytes] = ..., hashes: _Optional[_Iterable[bytes]] = ...) -> None: ...

class GetReceiptRequest(_message.Message):
    __slots__ = ("decision_id", "index")
    DECISION_ID_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    decision_id: str
    index: int
    def __init__(self, decision_id: _Optional[str] = ..., index: _Optional[int] = ...) -> None: ...

class Receipt(_message.Message):
    __slots__ = ("proof", "entry")
    PROOF_FIELD_NUMBER: _ClassVar[int]
    ENTRY_FIELD_NUMBER: _ClassVar[int]
    proof: bytes
    entry: Entry
    def __init__(self, proof: _Optional[bytes] = ..., entry: _Optional[_Union[Entry, _Mapping]] = ...) -> None: ...
