"""What crosses Temporal for the publishing capability: the publication's and each target's
status, the workflow's id and input, and every activity's argument and answer.

Only ids, statuses and short reasons cross: the post's text, the platforms' answers and
every token stay in the database (the activities read and write them), so workflow
history holds nothing a reader of the Temporal UI should not see.

    publication   SCHEDULED ─► PUBLISHING ─► PUBLISHED | PARTIAL | FAILED ─► UNPUBLISHED
                      └─ cancel ─► CANCELED
    target        PENDING ─► PUBLISHING ─► PUBLISHED | PROCESSING ─► PUBLISHED | FAILED
                      ├─ SKIPPED (the platform cannot take it; the reason named)
                      ├─ CANCELED (the publication was canceled before it ran)
                      └─ (unpublish) PUBLISHED ─► UNPUBLISHED | DELETE_FAILED
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

PUBLICATION_WORKFLOW = "PublicationWorkflow"

EVENT_PUBLISHED = "publication.published"
EVENT_PARTIAL = "publication.partial"
EVENT_FAILED = "publication.failed"
EVENT_UNPUBLISHED = "publication.unpublished"
# Seed 003's events, one per target's outcome.
EVENT_SYNCED = "integration.synced"
EVENT_INTEGRATION_ERROR = "integration.error"
# The sync log's names (integration_sync_logs.action / resource_type).
SYNC_ACTION_PUBLISH = "content_publish"
SYNC_ACTION_UNPUBLISH = "content_unpublish"
SYNC_RESOURCE = "publication"


class PublicationStatus(StrEnum):
    SCHEDULED = "SCHEDULED"
    PUBLISHING = "PUBLISHING"
    PUBLISHED = "PUBLISHED"
    PARTIAL = "PARTIAL"
    FAILED = "FAILED"
    CANCELED = "CANCELED"
    UNPUBLISHED = "UNPUBLISHED"


class TargetStatus(StrEnum):
    PENDING = "PENDING"
    PUBLISHING = "PUBLISHING"
    # The post exists; the platform is still processing it (YouTube, TikTok).
    PROCESSING = "PROCESSING"
    PUBLISHED = "PUBLISHED"
    FAILED = "FAILED"
    SKIPPED = "SKIPPED"
    CANCELED = "CANCELED"
    UNPUBLISHED = "UNPUBLISHED"
    # The platform could not (or would not) delete the post: it is still up.
    DELETE_FAILED = "DELETE_FAILED"


# A publication whose targets are all settled.
SETTLED = frozenset(
    {
        PublicationStatus.PUBLISHED,
        PublicationStatus.PARTIAL,
        PublicationStatus.FAILED,
        PublicationStatus.CANCELED,
        PublicationStatus.UNPUBLISHED,
    }
)
TARGET_DONE = frozenset(
    {
        TargetStatus.PUBLISHED,
        TargetStatus.FAILED,
        TargetStatus.SKIPPED,
        TargetStatus.CANCELED,
        TargetStatus.UNPUBLISHED,
        TargetStatus.DELETE_FAILED,
    }
)


def publication_workflow_id(publication_id: str) -> str:
    return f"publication-{publication_id}"


def publish_call_key(publication_id: str, integration_id: str) -> str:
    """The provider-call ledger's key of one target's publish: one post per target, ever."""
    return f"publication-{publication_id}:{integration_id}:publish"


def final_status(statuses: list[str]) -> PublicationStatus:
    """PUBLISHED when every target that was attempted published (SKIPPED ones do not
    count against it), FAILED when none did, PARTIAL between."""
    attempted = [s for s in statuses if s != TargetStatus.SKIPPED]
    published = [s for s in attempted if s == TargetStatus.PUBLISHED]
    if attempted and len(published) == len(attempted):
        return PublicationStatus.PUBLISHED
    if published:
        return PublicationStatus.PARTIAL
    return PublicationStatus.FAILED


@dataclass
class TargetRef:
    """One target: which connection, on which platform (ids only). `skip_code` is set
    when the API found at POST that the platform cannot take the post (SKIPPED, the
    reason in the row): the workflow does not run it."""

    integration_id: str
    provider: str
    skip_code: str | None = None


@dataclass
class PublicationInput:
    """`publication-{id}`'s start argument. `scheduled_at` (ISO, UTC) is waited for on a
    durable timer; `unpublish` marks a run started to take a finished publication down
    (DELETE after the first run ended): it loads the targets and waits for the update.
    `status_written`: the API wrote PUBLISHING with the rows (a publication due now), so
    the run does not write it again (inputs from before it was written default False)."""

    publication_id: str
    targets: list[TargetRef] = field(default_factory=list)
    scheduled_at: str | None = None
    poll_interval_seconds: float = 5.0
    unpublish: bool = False
    status_written: bool = False


@dataclass
class TargetState:
    integration_id: str
    provider: str
    status: str = TargetStatus.PENDING.value
    error_code: str | None = None


@dataclass
class PublicationState:
    """What the `state` query answers; the row in `publications` has the rest."""

    publication_id: str
    status: str = PublicationStatus.SCHEDULED.value
    targets: list[TargetState] = field(default_factory=list)


@dataclass
class CancelPublication:
    reason: str = "requested"


@dataclass
class UnpublishPublication:
    reason: str = "requested"


@dataclass
class TargetCall:
    """An activity's argument about one target."""

    publication_id: str
    integration_id: str
    provider: str


@dataclass
class TargetOutcome:
    """Where a target stands after an activity: its status, and the Relay error code of a
    failure or the skip reason's code (the message is in the row, not here)."""

    status: str
    code: str | None = None


@dataclass
class TargetFailure:
    """A target whose publish failed for good in a way the activity could not record
    itself (its retries ran out): the failure's code and message go into the row."""

    publication_id: str
    integration_id: str
    provider: str
    code: str
    message: str


@dataclass
class SetStatus:
    publication_id: str
    status: str


@dataclass
class LoadPublication:
    publication_id: str


@dataclass
class LoadedPublication:
    status: str
    targets: list[TargetState] = field(default_factory=list)
