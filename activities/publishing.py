"""The publication's side effects: each target's publish, status polls and delete at its
platform (relay.publishing adapters, acting with the user's connection), the publications
read model, seed 003's sync logs, and the `publication.*` / `integration.*` events.

A target's publish goes:

    the row says it is done already      → that outcome (a retried or repeated activity)
    the platform cannot take the post    → SKIPPED with the reason (no I/O, no slot used)
    the shared limit is used up          → retryable RATE_LIMITED, next_retry_delay = the
                                           time until a slot frees (relay.publishing.limits)
    the connection's token               → relay.calendar.access.ConnectionAccess: a token
                                           due is refreshed through the connection's workflow;
                                           a 401 gets one forced refresh, then NEEDS_REAUTH
    adapter.publish                      → inside the provider-call ledger under
                                           `publication-{id}:{integrationId}:publish`: a
                                           retry whose first call reached the platform
                                           reuses its result, so no post is made twice; a
                                           call whose outcome is unknown (a timeout after
                                           the request left) is not repeated (UNKNOWN_OUTCOME)

The platform's answer is classified here: 429 and 5xx are retried by Temporal (Retry-After
as the next delay), a 4xx is that target's FAILED with the platform's message. Every
attempt at the platform leaves one sync log (seed 003's shape) and sets the integration's
lastSyncAt / lastError. Tokens are read here, never passed in or returned.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any, TypeVar

import httpx
from sqlalchemy.engine import Engine
from temporalio import activity
from temporalio.client import Client, WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError

from relay.calendar.access import ConnectionAccess, require_connection
from relay.crypto import Keyring
from relay.db import utcnow
from relay.errors import ErrorCode, RelayError
from relay.files import repository as files
from relay.files import storage
from relay.files.contracts import FileStatus
from relay.ledger import Ledger
from relay.models.oauth import Integration, SyncStatus
from relay.oauth import repository as oauth_repository
from relay.oauth.catalog import Catalog, load_catalog
from relay.oauth.contracts import RefreshOutcome, RefreshRequest, integration_workflow_id
from relay.publishing import repository
from relay.publishing.adapters import (
    MediaItem,
    PublishAdapter,
    PublishError,
    PublishRequest,
    PublishResult,
    PublishState,
)
from relay.publishing.contracts import (
    EVENT_FAILED,
    EVENT_INTEGRATION_ERROR,
    EVENT_PARTIAL,
    EVENT_PUBLISHED,
    EVENT_SYNCED,
    EVENT_UNPUBLISHED,
    SYNC_ACTION_PUBLISH,
    SYNC_ACTION_UNPUBLISH,
    LoadedPublication,
    LoadPublication,
    PublicationStatus,
    SetStatus,
    TargetCall,
    TargetFailure,
    TargetOutcome,
    TargetState,
    TargetStatus,
    final_status,
    publish_call_key,
)
from relay.publishing.limits import RateLimiter, parse_limits
from relay.publishing.providers import api_bases, build_adapters
from relay.publishing.repository import SyncEntry
from relay.settings import Settings
from relay.webhooks.publish import publish_event
from relay.worker_context import WorkerContext

log = logging.getLogger(__name__)

T = TypeVar("T")

# Uploads (video) can take a while; a platform that does not answer in this long is retried.
HTTP_TIMEOUT = httpx.Timeout(60.0, connect=10.0)
_EVENTS = {
    PublicationStatus.PUBLISHED: EVENT_PUBLISHED,
    PublicationStatus.PARTIAL: EVENT_PARTIAL,
    PublicationStatus.FAILED: EVENT_FAILED,
}


# While a publish, poll or delete runs (a video upload takes minutes), the activity says it
# is alive this often, so a lost worker is noticed within the workflow's heartbeat timeout
# instead of the whole start-to-close timeout.
HEARTBEAT_EVERY = 5.0


@contextlib.asynccontextmanager
async def _heartbeating() -> AsyncIterator[None]:
    async def beat() -> None:
        while True:
            activity.heartbeat()
            await asyncio.sleep(HEARTBEAT_EVERY)

    task = asyncio.create_task(beat())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


class _TokenRejected(Exception):
    """The platform refused the token (inside one attempt): ConnectionAccess refreshes."""


def _access_class(provider: str) -> type[ConnectionAccess]:
    return type(f"{provider.title()}PublishAccess", (ConnectionAccess,), {"provider": provider})


def _result_json(result: PublishResult) -> dict[str, Any]:
    return dataclasses.asdict(result) | {"state": result.state.value}


def _result_of(data: dict[str, Any]) -> PublishResult:
    return PublishResult(**(data | {"state": PublishState(data["state"])}))


def _remote(row: Any) -> PublishResult:
    remote = dict(row.remote or {})
    return PublishResult(
        provider=row.provider,
        state=PublishState.PROCESSING
        if row.status == TargetStatus.PROCESSING
        else PublishState.PUBLISHED,
        remote_id=row.remote_id,
        url=row.url,
        processing_id=remote.get("processing_id"),
        handle=remote.get("handle"),
    )


def _failure_of(error: PublishError) -> ApplicationError:
    if error.token_rejected:
        # Retryable on purpose: the ledger releases the call (the platform answered and
        # did not act), and ConnectionAccess retries it once with a refreshed token.
        return ApplicationError(
            f"{error.provider} rejected the access token",
            {"provider": error.provider, "status": error.status or 401, "tokenRejected": True},
            type=ErrorCode.TOKEN_EXPIRED.value,
        )
    return error.as_application_error()


def _rejected(failure: ApplicationError) -> bool:
    details = failure.details[0] if failure.details else None
    return isinstance(details, dict) and bool(details.get("tokenRejected"))


def _code(failure: ApplicationError) -> str:
    return failure.type or ErrorCode.PROVIDER_ERROR.value


class PublishingActivities:
    """Publishes, polls and deletes one target at a time for PublicationWorkflow, and keeps
    the publications read model, the sync logs and the events."""

    def __init__(
        self,
        *,
        settings: Settings,
        engine: Engine,
        keyring: Keyring,
        client: Client,
        ledger: Ledger,
        catalog: Catalog | None = None,
        adapters: dict[str, PublishAdapter] | None = None,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        self._settings = settings
        self._engine = engine
        self._keyring = keyring
        self._client = client
        self._ledger = ledger
        self._catalog = catalog or load_catalog(settings.providers_file)
        self._http = http or httpx.AsyncClient(timeout=HTTP_TIMEOUT)
        self._adapters = (
            adapters if adapters is not None else build_adapters(self._http, api_bases(settings))
        )
        self._limiter = RateLimiter(engine, parse_limits(settings.publish_rate_limits))
        self._access: dict[str, ConnectionAccess] = {}
        self._s3: Any = None

    @classmethod
    def from_context(cls, context: WorkerContext) -> PublishingActivities:
        made = cls(
            settings=context.settings,
            engine=context.engine,
            keyring=context.keyring,
            client=context.client,
            ledger=context.ledger,
        )
        context.closers.append(made.aclose)
        return made

    async def aclose(self) -> None:
        await self._http.aclose()

    def activities(self) -> list[Callable[..., Any]]:
        return [
            self.load_publication,
            self.set_publication_status,
            self.cancel_publication,
            self.publish_target,
            self.poll_target,
            self.record_target_failure,
            self.finish_publication,
            self.unpublish_target,
            self.finish_unpublish,
        ]

    # --- plumbing ------------------------------------------------------------------------

    async def _db(self, call: Callable[[], T]) -> T:
        return await asyncio.to_thread(call)

    def _connection(self, provider: str) -> ConnectionAccess:
        if provider not in self._access:
            self._access[provider] = _access_class(provider)(
                engine=self._engine,
                keyring=self._keyring,
                catalog=self._catalog,
                refresh=self._refresh_connection,
            )
        return self._access[provider]

    async def _refresh_connection(self, integration: Integration, *, force: bool) -> object:
        """A refresh through the connection's workflow (by name: activities do not import
        workflows/); its refusal is REFRESH_FAILED, as the API's refresh says."""
        handle = self._client.get_workflow_handle(integration_workflow_id(integration.id))
        try:
            return await handle.execute_update(
                "refresh",
                RefreshRequest(force=force, reason="publishing"),
                result_type=RefreshOutcome,
            )
        except WorkflowUpdateFailedError:
            raise RelayError(
                ErrorCode.REFRESH_FAILED, "the connection's refresh was refused"
            ) from None

    async def _with_token(
        self,
        params: TargetCall,
        attempt: Callable[[str], Awaitable[T]],
        integration: Integration | None = None,
    ) -> T:
        """`attempt(token)` with the connection's token (one refresh on a rejection);
        `integration`: the connection as just read, if it was."""

        async def guarded(token: str) -> T:
            try:
                return await attempt(token)
            except PublishError as error:
                if error.token_rejected:
                    raise _TokenRejected from None
                raise _failure_of(error) from None
            except ApplicationError as failure:
                if _rejected(failure):
                    raise _TokenRejected from None
                raise

        return await self._connection(params.provider).with_token(
            uuid.UUID(params.integration_id), guarded, _TokenRejected, integration=integration
        )

    def _adapter(self, provider: str) -> PublishAdapter:
        adapter = self._adapters.get(provider)
        if adapter is None:
            raise RelayError(
                ErrorCode.PROVIDER_NOT_CONFIGURED, f"{provider} is not a publishing platform"
            )
        return adapter

    async def _media(self, file_ids: list[str]) -> list[MediaItem]:
        """The publication's stored files, each as a URL valid FILE_URL_TTL."""
        if not file_ids:
            return []
        items: list[MediaItem] = []
        for file_id in file_ids:
            view = await self._db(functools.partial(files.find_view, self._engine, file_id))
            if view is None or view.status != FileStatus.READY or view.object_key is None:
                raise RelayError(
                    ErrorCode.CONFLICT,
                    f"the media file {file_id} is not READY",
                    {"fileId": file_id},
                )
            if self._s3 is None:
                self._s3 = storage.s3_client(self._settings)
            url = await self._db(
                functools.partial(storage.download_url, self._s3, self._settings, view.object_key)
            )
            items.append(
                MediaItem(
                    content_type=view.detected_type or view.content_type,
                    size=view.size or view.declared_size,
                    url=url,
                    filename=view.filename,
                )
            )
        return items

    async def _event(self, event_type: str, data: dict[str, Any], key: str) -> None:
        await self._db(
            functools.partial(publish_event, self._engine, event_type, data, idempotency_key=key)
        )

    async def _integration_event(
        self,
        event_type: str,
        params: TargetCall,
        extra: dict[str, Any],
        key: str,
        integration: Integration | None = None,
    ) -> repository.TargetEvent | None:
        """Seed 003's integration.* event about this target, to write with its row
        (`integration`: the connection as the activity read it, else read here)."""
        if integration is None:
            integration = await self._db(
                functools.partial(
                    oauth_repository.get_integration,
                    self._engine,
                    uuid.UUID(params.integration_id),
                )
            )
        if integration is None:
            return None
        data = oauth_repository.event_data(integration) | {"publicationId": params.publication_id}
        return repository.TargetEvent(event_type, data | extra, key)

    async def _fail(
        self,
        params: TargetCall,
        code: str,
        message: str,
        started_at: datetime | None,
        *,
        attempted: bool = True,
        integration: Integration | None = None,
    ) -> TargetOutcome:
        """The target FAILED for good: its row, a sync log for the attempt, integration.error."""
        sync = (
            SyncEntry(
                SYNC_ACTION_PUBLISH,
                params.publication_id,
                SyncStatus.FAILED,
                started_at or utcnow(),
                error=message,
                meta={"provider": params.provider, "code": code},
            )
            if attempted
            else None
        )
        event = await self._integration_event(
            EVENT_INTEGRATION_ERROR,
            params,
            # lastError as the sync log leaves it (the connection was read before).
            {"error": {"code": code, "message": message}}
            | ({"lastError": message[: repository.ERROR_LIMIT]} if attempted else {}),
            f"publication-{params.publication_id}:{params.integration_id}:error",
            integration,
        )
        await self._db(
            functools.partial(
                repository.update_target,
                self._engine,
                params.publication_id,
                params.integration_id,
                sync=sync,
                event=event,
                status=TargetStatus.FAILED.value,
                error_code=code,
                last_error=message,
            )
        )
        return TargetOutcome(TargetStatus.FAILED.value, code)

    async def _published(
        self,
        params: TargetCall,
        result: PublishResult,
        started_at: datetime,
        *,
        integration: Integration | None = None,
    ) -> TargetOutcome:
        """The platform's answer into the row: PUBLISHED (a sync log, integration.synced),
        PROCESSING (polled next) or FAILED (its processing failed)."""
        if result.state is PublishState.FAILED:
            return await self._fail(
                params,
                ErrorCode.PROVIDER_ERROR.value,
                result.failure_reason or f"{params.provider} could not process the post",
                started_at,
                integration=integration,
            )
        processing = result.state is PublishState.PROCESSING
        values: dict[str, Any] = {
            "status": (TargetStatus.PROCESSING if processing else TargetStatus.PUBLISHED).value,
            "remote_id": result.remote_id,
            "url": result.url,
            "remote": {"processing_id": result.processing_id, "handle": result.handle},
            "error_code": None,
            "last_error": None,
        }
        sync = event = None
        if not processing:
            values["published_at"] = utcnow()
            sync = SyncEntry(
                SYNC_ACTION_PUBLISH,
                params.publication_id,
                SyncStatus.COMPLETED,
                started_at,
                meta={"provider": params.provider, "remoteId": result.remote_id},
            )
            event = await self._integration_event(
                EVENT_SYNCED,
                params,
                {"remoteId": result.remote_id, "url": result.url, "lastError": None},
                f"publication-{params.publication_id}:{params.integration_id}:synced",
                integration,
            )
        await self._db(
            functools.partial(
                repository.update_target,
                self._engine,
                params.publication_id,
                params.integration_id,
                sync=sync,
                event=event,
                **values,
            )
        )
        if processing:
            return TargetOutcome(TargetStatus.PROCESSING.value)
        return TargetOutcome(TargetStatus.PUBLISHED.value)

    # --- the read model --------------------------------------------------------------------

    @activity.defn
    async def load_publication(self, params: LoadPublication) -> LoadedPublication:
        row = await self._db(
            functools.partial(repository.load, self._engine, params.publication_id)
        )
        rows = await self._db(
            functools.partial(repository.targets, self._engine, params.publication_id)
        )
        return LoadedPublication(
            status=str(row.status),
            targets=[
                TargetState(r.integration_id, r.provider, str(r.status), r.error_code or None)
                for r in rows
            ],
        )

    @activity.defn
    async def set_publication_status(self, params: SetStatus) -> None:
        await self._db(
            functools.partial(
                repository.set_status, self._engine, params.publication_id, params.status
            )
        )

    @activity.defn
    async def cancel_publication(self, params: LoadPublication) -> None:
        await self._db(
            functools.partial(repository.cancel_pending, self._engine, params.publication_id)
        )

    # --- publishing ---------------------------------------------------------------------------

    @activity.defn
    async def publish_target(self, params: TargetCall) -> TargetOutcome:
        """One target's publish (see the module docstring). Permanent failures are recorded
        and answered as FAILED; transient ones raise for Temporal to retry."""
        async with _heartbeating():
            return await self._publish_target(params)

    async def _publish_target(self, params: TargetCall) -> TargetOutcome:
        # The target, the publication and the connection in one read.
        context = await self._db(
            functools.partial(
                repository.publish_context,
                self._engine,
                params.publication_id,
                params.integration_id,
            )
        )
        row, publication = context.target, context.publication
        if row.status not in (TargetStatus.PENDING, TargetStatus.PUBLISHING):
            return TargetOutcome(str(row.status), row.error_code or row.skip_reason)
        started_at = utcnow()
        try:
            adapter = self._adapter(params.provider)
            integration = require_connection(
                context.integration, uuid.UUID(params.integration_id), params.provider
            )
            request = PublishRequest(
                text=publication.text,
                access_token="",
                link=publication.link,
                media=await self._media(list(publication.media_file_ids or [])),
                account=repository.account_of(integration),
            )
        except RelayError as error:
            return await self._fail(params, error.code.value, error.message, None, attempted=False)
        skip = adapter.check(request)
        if skip is not None:
            await self._db(
                functools.partial(
                    repository.update_target,
                    self._engine,
                    params.publication_id,
                    params.integration_id,
                    status=TargetStatus.SKIPPED.value,
                    skip_reason=skip.code,
                    last_error=skip.message,
                )
            )
            return TargetOutcome(TargetStatus.SKIPPED.value, skip.code)
        wait = await self._db(functools.partial(self._take_slot, params))
        if wait.total_seconds() > 0:
            limit = self._limiter.limit_for(params.provider)
            raise ApplicationError(
                f"{params.provider}: the connection's publish limit ({limit}) is used up",
                {"provider": params.provider, "limit": str(limit), "clientSide": True},
                type=ErrorCode.RATE_LIMITED.value,
                next_retry_delay=wait,
            )
        key = publish_call_key(params.publication_id, params.integration_id)

        async def attempt(token: str) -> dict[str, Any]:
            async def call() -> dict[str, Any]:
                try:
                    result = await adapter.publish(dataclasses.replace(request, access_token=token))
                except PublishError as error:
                    raise _failure_of(error) from None
                return _result_json(result)

            answer = await self._ledger.run(
                key, call, provider=params.provider, operation="publish"
            )
            assert isinstance(answer, dict)
            return answer

        try:
            answer = await self._with_token(params, attempt, integration)
        except RelayError as error:  # NEEDS_REAUTH, the connection gone
            return await self._fail(
                params, error.code.value, error.message, started_at, integration=integration
            )
        except ApplicationError as failure:
            if failure.non_retryable:
                return await self._fail(
                    params, _code(failure), failure.message, started_at, integration=integration
                )
            # This attempt failed; Temporal tries again. Logged as the attempt it was.
            await self._db(
                functools.partial(
                    repository.update_target,
                    self._engine,
                    params.publication_id,
                    params.integration_id,
                    sync=SyncEntry(
                        SYNC_ACTION_PUBLISH,
                        params.publication_id,
                        SyncStatus.FAILED,
                        started_at,
                        error=failure.message,
                        meta={
                            "provider": params.provider,
                            "code": _code(failure),
                            "retrying": True,
                        },
                    ),
                    error_code=_code(failure),
                    last_error=failure.message,
                )
            )
            raise
        return await self._published(
            params, _result_of(answer), started_at, integration=integration
        )

    def _take_slot(self, params: TargetCall) -> timedelta:
        """A slot of the shared limit and, when taken, the attempt begun (PUBLISHING,
        attempts + 1): one thread hop. The wait until a slot frees, else zero."""
        wait = self._limiter.acquire(params.provider, params.integration_id)
        if wait.total_seconds() <= 0:
            repository.begin_attempt(self._engine, params.publication_id, params.integration_id)
        return wait

    @activity.defn
    async def poll_target(self, params: TargetCall) -> TargetOutcome:
        """Asks the platform about a post it is still processing (reads only)."""
        async with _heartbeating():
            return await self._poll_target(params)

    async def _poll_target(self, params: TargetCall) -> TargetOutcome:
        row = await self._db(
            functools.partial(
                repository.target, self._engine, params.publication_id, params.integration_id
            )
        )
        if row.status != TargetStatus.PROCESSING:
            return TargetOutcome(str(row.status), row.error_code)
        remote = _remote(row)
        started_at = utcnow()
        adapter = self._adapter(params.provider)
        try:
            result = await self._with_token(params, lambda token: adapter.status(remote, token))
        except RelayError as error:
            return await self._fail(params, error.code.value, error.message, started_at)
        except ApplicationError as failure:
            if failure.non_retryable:
                return await self._fail(params, _code(failure), failure.message, started_at)
            raise
        return await self._published(params, result, started_at)

    @activity.defn
    async def record_target_failure(self, params: TargetFailure) -> TargetOutcome:
        """A target whose retries ran out: FAILED with the last failure."""
        call = TargetCall(params.publication_id, params.integration_id, params.provider)
        row = await self._db(
            functools.partial(
                repository.target, self._engine, params.publication_id, params.integration_id
            )
        )
        if row.status in (TargetStatus.PUBLISHED, TargetStatus.FAILED, TargetStatus.SKIPPED):
            return TargetOutcome(str(row.status), row.error_code)
        return await self._fail(call, params.code, params.message, None, attempted=False)

    @activity.defn
    async def finish_publication(self, params: LoadPublication) -> str:
        """The publication's final status from its targets', and its event (once)."""
        rows = await self._db(
            functools.partial(repository.targets, self._engine, params.publication_id)
        )
        status = final_status([str(r.status) for r in rows])
        await self._db(
            functools.partial(
                repository.set_status, self._engine, params.publication_id, status.value
            )
        )
        publication = await self._db(
            functools.partial(repository.load, self._engine, params.publication_id)
        )
        await self._event(
            _EVENTS[status],
            _event_data(publication, rows),
            f"publication-{params.publication_id}:{status.value.lower()}",
        )
        return status.value

    # --- unpublishing -------------------------------------------------------------------------

    @activity.defn
    async def unpublish_target(self, params: TargetCall) -> TargetOutcome:
        """Deletes the target's post (the compensation for its publish). A platform that
        cannot delete (Instagram, TikTok) or refuses leaves DELETE_FAILED with its reason."""
        async with _heartbeating():
            return await self._unpublish_target(params)

    async def _unpublish_target(self, params: TargetCall) -> TargetOutcome:
        row = await self._db(
            functools.partial(
                repository.target, self._engine, params.publication_id, params.integration_id
            )
        )
        if row.status not in (
            TargetStatus.PUBLISHED,
            TargetStatus.PROCESSING,
            TargetStatus.DELETE_FAILED,
        ):
            return TargetOutcome(str(row.status), row.error_code)
        remote = _remote(row)
        started_at = utcnow()
        adapter = self._adapter(params.provider)
        reason: str | None
        try:
            result = await self._with_token(params, lambda token: adapter.delete(remote, token))
            deleted, reason = result.deleted, result.reason
        except RelayError as error:
            deleted, reason = False, error.message
        except ApplicationError as failure:
            if not failure.non_retryable:
                raise
            deleted, reason = False, failure.message
        status = TargetStatus.UNPUBLISHED if deleted else TargetStatus.DELETE_FAILED
        reason = reason or (None if deleted else f"{params.provider} did not delete the post")
        await self._db(
            functools.partial(
                repository.update_target,
                self._engine,
                params.publication_id,
                params.integration_id,
                sync=SyncEntry(
                    SYNC_ACTION_UNPUBLISH,
                    params.publication_id,
                    SyncStatus.COMPLETED if deleted else SyncStatus.FAILED,
                    started_at,
                    error=None if deleted else reason,
                    meta={"provider": params.provider, "remoteId": row.remote_id},
                ),
                status=status.value,
                delete_error=None if deleted else reason,
            )
        )
        return TargetOutcome(status.value, None if deleted else "DELETE_FAILED")

    @activity.defn
    async def finish_unpublish(self, params: LoadPublication) -> str:
        rows = await self._db(
            functools.partial(repository.targets, self._engine, params.publication_id)
        )
        await self._db(
            functools.partial(
                repository.set_status,
                self._engine,
                params.publication_id,
                PublicationStatus.UNPUBLISHED.value,
            )
        )
        publication = await self._db(
            functools.partial(repository.load, self._engine, params.publication_id)
        )
        await self._event(
            EVENT_UNPUBLISHED,
            _event_data(publication, rows),
            f"publication-{params.publication_id}:unpublished",
        )
        return PublicationStatus.UNPUBLISHED.value


def _event_data(publication: Any, rows: list[Any]) -> dict[str, Any]:
    """What publication.* events carry: ids, statuses and the posts' URLs, not the text."""
    return {
        "publicationId": str(publication.id),
        "contentId": publication.content_id,
        "userId": publication.user_id,
        "status": str(publication.status),
        "targets": [
            {
                "integrationId": r.integration_id,
                "provider": r.provider,
                "status": str(r.status),
                "remoteId": r.remote_id,
                "url": r.url,
                "error": r.last_error,
                "deleteError": r.delete_error,
            }
            for r in rows
        ],
    }


ACTIVITIES = PublishingActivities
