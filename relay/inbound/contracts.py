"""What crosses Temporal for inbound provider webhooks: the forwarder's input and state,
its pump's input and result, the target an event is forwarded to, and the signal every
receiving workflow gets.

Standard library only, shared by `InboundForwarderWorkflow`, `InboundActivities`, the
routes and the capabilities that declare where their providers' events go. New fields
get defaults so recorded histories still decode.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class InboundStatus(StrEnum):
    """PENDING (recorded, not yet accepted by Temporal) ──► FORWARDED.
    IGNORED: no workflow takes this event (its capability declared no target)."""

    PENDING = "PENDING"
    FORWARDED = "FORWARDED"
    IGNORED = "IGNORED"


WORKFLOW_ID = "inbound-forwarder"
DEFAULT_TASK_QUEUE = "relay"
PUMP_HEARTBEAT_SECONDS = 20.0
MAX_PUMPS_PER_RUN = 200


def forwarder_workflow_id(task_queue: str) -> str:
    """`inbound-forwarder`; other task queues get their own forwarder."""
    return WORKFLOW_ID if task_queue == DEFAULT_TASK_QUEUE else f"{WORKFLOW_ID}@{task_queue}"


@dataclass
class ForwardTarget:
    """Where a capability sends one provider event: signal-with-start of `workflow_type`
    as `workflow_id` with `start_arg` (used only when no run is open), then `signal`.

    Declared by the capability when the event is recorded (see `relay.billing.inbound`)
    and stored with it, so forwarding and replay need no capability code.
    """

    workflow_type: str
    workflow_id: str
    signal: str
    start_arg: dict[str, Any] = field(default_factory=dict)
    # Keyword search attributes (Relay's, by name: RelayEntityId, RelayProvider…) a run
    # started by the event gets, so operators find it in the Temporal UI.
    search_attributes: dict[str, str] = field(default_factory=dict)


@dataclass
class InboundEventSignal:
    """What a receiving workflow is told: which event arrived, never its payload (a
    workflow that needs the object re-reads it from the provider). `replay` is set when an
    operator re-fed the event: the workflow acts on it even if it saw the id before."""

    inbox_id: str
    provider: str
    event_id: str
    type: str
    object_id: str | None = None
    replay: bool = False


# --- the forwarder workflow ----------------------------------------------------------------


@dataclass
class InboundForwarderInput:
    pump_budget_seconds: float = 60.0
    pump_poll_seconds: float = 0.5
    pump_heartbeat_seconds: float = PUMP_HEARTBEAT_SECONDS
    batch_size: int = 100
    lease_seconds: float = 30.0
    runs: int = 0
    max_pumps_per_run: int = MAX_PUMPS_PER_RUN


@dataclass
class InboundForwarderState:
    runs: int = 0
    pumps: int = 0
    forwarded: int = 0
    failed: int = 0


@dataclass
class ForwardPumpInput:
    budget_seconds: float = 60.0
    poll_seconds: float = 0.5
    batch_size: int = 100
    lease_seconds: float = 30.0


@dataclass
class ForwardPumpResult:
    forwarded: int = 0
    failed: int = 0
