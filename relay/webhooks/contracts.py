"""What crosses Temporal for outgoing webhooks: the dispatcher's input and state, the
delivery activities' inputs and results, the retry hand-over signal.

Standard library only, shared by `WebhookDispatchWorkflow`, `WebhookActivities` and
the API's client. New fields get defaults so recorded histories still decode.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum


class DeliveryStatus(StrEnum):
    PENDING = "PENDING"
    DELIVERED = "DELIVERED"
    RETRYING = "RETRYING"
    FAILED = "FAILED"


class AttemptTrigger(StrEnum):
    SCHEDULED = "scheduled"
    MANUAL = "manual"


WORKFLOW_ID = "webhook-dispatch"
DEFAULT_TASK_QUEUE = "relay"
MAX_PUMPS_PER_RUN = 200
# A dead worker's pump is retried elsewhere this long after its last heartbeat, so
# delivery resumes within seconds of a crash. Temporal sends heartbeats every 0.8x of it:
# a pump loop late by more than ~1 s is taken for lost (it then loses nothing: the next
# attempt takes its leases back). Measured in docs/benchmarks.md.
PUMP_HEARTBEAT_SECONDS = 5.0
# What dispatchers started before that were given, and carry across continue-as-new.
LEGACY_PUMP_HEARTBEAT_SECONDS = 20.0
HOLD_RETRIES_SIGNAL = "hold_retries"


def dispatcher_workflow_id(task_queue: str, shard: int = 0, shards: int = 1) -> str:
    """`webhook-dispatch` (or `-{n}` per shard); other task queues get their own dispatcher."""
    base = WORKFLOW_ID if shards <= 1 else f"{WORKFLOW_ID}-{shard}"
    return base if task_queue == DEFAULT_TASK_QUEUE else f"{base}@{task_queue}"


@dataclass
class HeldRetry:
    """A failed delivery a dispatcher holds a timer for."""

    delivery_id: str
    scheduled_attempts: int
    due: datetime


# --- the workflow ------------------------------------------------------------------------


@dataclass
class WebhookDispatchInput:
    shard: int = 0
    pump_budget_seconds: float = 60.0
    pump_poll_seconds: float = 0.025
    pump_heartbeat_seconds: float = PUMP_HEARTBEAT_SECONDS
    # Set by the client from WEBHOOK_TIMEOUT and WEBHOOK_LEASE.
    attempt_timeout_seconds: float = 15.0
    # Time-skipping tests: a pump returns when idle, then the workflow waits this long
    # (or until a retry is due) before the next one. Zero (production) pumps again at once.
    idle_pause_seconds: float = 0.0
    held: list[HeldRetry] = field(default_factory=list)
    runs: int = 0
    max_pumps_per_run: int = MAX_PUMPS_PER_RUN


@dataclass
class WebhookDispatchState:
    shard: int = 0
    runs: int = 0
    pumps: int = 0
    delivered: int = 0
    failed: int = 0
    held_retries: int = 0
    next_retry_at: datetime | None = None
    retry_batches_in_flight: int = 0


@dataclass
class HoldRetries:
    """Signal payload: retries the pump recorded, for the dispatcher's timers."""

    retries: list[HeldRetry] = field(default_factory=list)


# --- the activities ----------------------------------------------------------------------


@dataclass
class PumpInput:
    budget_seconds: float = 60.0
    poll_seconds: float = 0.025
    # Return as soon as a poll finds nothing to do (time-skipping tests).
    return_when_idle: bool = False


@dataclass
class PumpResult:
    delivered: int = 0
    failed: int = 0
    rescheduled: int = 0
    idle: bool = False


@dataclass
class RetryBatchInput:
    retries: list[HeldRetry] = field(default_factory=list)


@dataclass
class RetryBatchResult:
    attempted: int = 0
    delivered: int = 0
    retries: list[HeldRetry] = field(default_factory=list)


@dataclass
class ManualRetryInput:
    delivery_id: str


@dataclass
class AttemptResult:
    delivery_id: str
    attempt: int
    trigger: str
    started_at: datetime
    duration_ms: int
    status_code: int | None
    response_body: str | None
    error: str | None
    status: str
