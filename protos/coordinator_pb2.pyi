from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class JobState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    JOB_STATE_UNSPECIFIED: _ClassVar[JobState]
    QUEUED: _ClassVar[JobState]
    SUBMITTED: _ClassVar[JobState]
    RUNNING: _ClassVar[JobState]
    SUCCEEDED: _ClassVar[JobState]
    FAILED: _ClassVar[JobState]
JOB_STATE_UNSPECIFIED: JobState
QUEUED: JobState
SUBMITTED: JobState
RUNNING: JobState
SUCCEEDED: JobState
FAILED: JobState

class JobSpec(_message.Message):
    __slots__ = ("schema", "parties", "epsilon", "delta", "min_survivors", "max_rows", "rows", "seed", "rounds", "per_round", "labels", "budget_split", "teacher", "teacher_steps", "timeout_s", "teacher_rate", "evaluate", "secagg_neighbours", "discover")
    SCHEMA_FIELD_NUMBER: _ClassVar[int]
    PARTIES_FIELD_NUMBER: _ClassVar[int]
    EPSILON_FIELD_NUMBER: _ClassVar[int]
    DELTA_FIELD_NUMBER: _ClassVar[int]
    MIN_SURVIVORS_FIELD_NUMBER: _ClassVar[int]
    MAX_ROWS_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    ROUNDS_FIELD_NUMBER: _ClassVar[int]
    PER_ROUND_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    BUDGET_SPLIT_FIELD_NUMBER: _ClassVar[int]
    TEACHER_FIELD_NUMBER: _ClassVar[int]
    TEACHER_STEPS_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_S_FIELD_NUMBER: _ClassVar[int]
    TEACHER_RATE_FIELD_NUMBER: _ClassVar[int]
    EVALUATE_FIELD_NUMBER: _ClassVar[int]
    SECAGG_NEIGHBOURS_FIELD_NUMBER: _ClassVar[int]
    DISCOVER_FIELD_NUMBER: _ClassVar[int]
    schema: str
    parties: int
    epsilon: float
    delta: float
    min_survivors: int
    max_rows: int
    rows: int
    seed: int
    rounds: int
    per_round: int
    labels: str
    budget_split: str
    teacher: str
    teacher_steps: int
    timeout_s: float
    teacher_rate: float
    evaluate: float
    secagg_neighbours: int
    discover: float
    def __init__(self, schema: _Optional[str] = ..., parties: _Optional[int] = ..., epsilon: _Optional[float] = ..., delta: _Optional[float] = ..., min_survivors: _Optional[int] = ..., max_rows: _Optional[int] = ..., rows: _Optional[int] = ..., seed: _Optional[int] = ..., rounds: _Optional[int] = ..., per_round: _Optional[int] = ..., labels: _Optional[str] = ..., budget_split: _Optional[str] = ..., teacher: _Optional[str] = ..., teacher_steps: _Optional[int] = ..., timeout_s: _Optional[float] = ..., teacher_rate: _Optional[float] = ..., evaluate: _Optional[float] = ..., secagg_neighbours: _Optional[int] = ..., discover: _Optional[float] = ...) -> None: ...

class Job(_message.Message):
    __slots__ = ("job_id", "state", "error", "epsilon_planned", "epsilon_spent", "created", "updated", "flower_run_id", "release_files", "spec", "phase", "round", "survivors", "last_event")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    EPSILON_PLANNED_FIELD_NUMBER: _ClassVar[int]
    EPSILON_SPENT_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    UPDATED_FIELD_NUMBER: _ClassVar[int]
    FLOWER_RUN_ID_FIELD_NUMBER: _ClassVar[int]
    RELEASE_FILES_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    PHASE_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    SURVIVORS_FIELD_NUMBER: _ClassVar[int]
    LAST_EVENT_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    state: JobState
    error: str
    epsilon_planned: float
    epsilon_spent: float
    created: str
    updated: str
    flower_run_id: int
    release_files: _containers.RepeatedScalarFieldContainer[str]
    spec: JobSpec
    phase: str
    round: int
    survivors: _containers.RepeatedScalarFieldContainer[str]
    last_event: str
    def __init__(self, job_id: _Optional[str] = ..., state: _Optional[_Union[JobState, str]] = ..., error: _Optional[str] = ..., epsilon_planned: _Optional[float] = ..., epsilon_spent: _Optional[float] = ..., created: _Optional[str] = ..., updated: _Optional[str] = ..., flower_run_id: _Optional[int] = ..., release_files: _Optional[_Iterable[str]] = ..., spec: _Optional[_Union[JobSpec, _Mapping]] = ..., phase: _Optional[str] = ..., round: _Optional[int] = ..., survivors: _Optional[_Iterable[str]] = ..., last_event: _Optional[str] = ...) -> None: ...

class SubmitJobRequest(_message.Message):
    __slots__ = ("spec",)
    SPEC_FIELD_NUMBER: _ClassVar[int]
    spec: JobSpec
    def __init__(self, spec: _Optional[_Union[JobSpec, _Mapping]] = ...) -> None: ...

class GetJobRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class ListJobsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListJobsResponse(_message.Message):
    __slots__ = ("jobs",)
    JOBS_FIELD_NUMBER: _ClassVar[int]
    jobs: _containers.RepeatedCompositeFieldContainer[Job]
    def __init__(self, jobs: _Optional[_Iterable[_Union[Job, _Mapping]]] = ...) -> None: ...

class StreamEventsRequest(_message.Message):
    __slots__ = ("job_id", "after_seq")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    AFTER_SEQ_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    after_seq: int
    def __init__(self, job_id: _Optional[str] = ..., after_seq: _Optional[int] = ...) -> None: ...

class JobEvent(_message.Message):
    __slots__ = ("seq", "time", "message", "state")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    seq: int
    time: str
    message: str
    state: JobState
    def __init__(self, seq: _Optional[int] = ..., time: _Optional[str] = ..., message: _Optional[str] = ..., state: _Optional[_Union[JobState, str]] = ...) -> None: ...

class FetchReleaseRequest(_message.Message):
    __slots__ = ("job_id", "file")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    FILE_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    file: str
    def __init__(self, job_id: _Optional[str] = ..., file: _Optional[str] = ...) -> None: ...

class ReleaseChunk(_message.Message):
    __slots__ = ("file", "data", "last")
    FILE_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    LAST_FIELD_NUMBER: _ClassVar[int]
    file: str
    data: bytes
    last: bool
    def __init__(self, file: _Optional[str] = ..., data: _Optional[bytes] = ..., last: _Optional[bool] = ...) -> None: ...

class GetLedgerRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class LedgerEntry(_message.Message):
    __slots__ = ("seq", "time", "phase", "mechanism", "event_json", "metadata_json", "prev_hash", "hash")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    PHASE_FIELD_NUMBER: _ClassVar[int]
    MECHANISM_FIELD_NUMBER: _ClassVar[int]
    EVENT_JSON_FIELD_NUMBER: _ClassVar[int]
    METADATA_JSON_FIELD_NUMBER: _ClassVar[int]
    PREV_HASH_FIELD_NUMBER: _ClassVar[int]
    HASH_FIELD_NUMBER: _ClassVar[int]
    seq: int
    time: str
    phase: str
    mechanism: str
    event_json: str
    metadata_json: str
    prev_hash: str
    hash: str
    def __init__(self, seq: _Optional[int] = ..., time: _Optional[str] = ..., phase: _Optional[str] = ..., mechanism: _Optional[str] = ..., event_json: _Optional[str] = ..., metadata_json: _Optional[str] = ..., prev_hash: _Optional[str] = ..., hash: _Optional[str] = ...) -> None: ...

class LedgerResponse(_message.Message):
    __slots__ = ("epsilon", "delta", "cap", "method", "entries")
    EPSILON_FIELD_NUMBER: _ClassVar[int]
    DELTA_FIELD_NUMBER: _ClassVar[int]
    CAP_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    epsilon: float
    delta: float
    cap: float
    method: str
    entries: _containers.RepeatedCompositeFieldContainer[LedgerEntry]
    def __init__(self, epsilon: _Optional[float] = ..., delta: _Optional[float] = ..., cap: _Optional[float] = ..., method: _Optional[str] = ..., entries: _Optional[_Iterable[_Union[LedgerEntry, _Mapping]]] = ...) -> None: ...
