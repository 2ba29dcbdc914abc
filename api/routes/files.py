"""Files' routes: /v1/files (presigned uploads, completion, the file, the list, deletion)
and `POST /webhooks/s3` (S3 event notifications, through SNS).

The API signs (locally, no network call) the presigned POST that sends a browser's upload
straight to S3 and the download URLs of a file's objects; the file's workflow
(`file-{id}`) does everything else and is the single writer of its state, which the read
model (`files`) serves to GET.

`POST /webhooks/s3` takes SNS's messages: it verifies their signature and topic
(relay.files.sns), confirms a subscription, and records each S3 record of a notification
once in the inbound inbox, forwarded as the `uploaded` signal to the file's workflow
(relay.files.inbound).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import json
import logging
import uuid
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from sqlalchemy import Row

from api.deps import EngineDep, SettingsDep, TemporalDep, require_api_key
from api.envelope import DEFAULT_LIMIT, MAX_LIMIT, Envelope, Page, error_responses, ok
from api.idempotency import require_same_request
from api.inbound import accept_event
from api.pagination import after_cursor, newest_first_page, page
from api.schemas.files import (
    FileCreate,
    FileDeleted,
    FileOut,
    FileUpload,
    RenditionOut,
    S3EventsAccepted,
)
from api.schemas.inbound import InboundAccepted
from relay.errors import ErrorCode, RelayError
from relay.files import repository, sns, storage
from relay.files.contracts import CompleteUpload, FileKind, FileStatus, FileView
from relay.files.inbound import PROVIDER as S3_PROVIDER
from relay.files.inbound import s3_records, s3_target
from relay.files.layout import safe_filename, upload_key
from relay.settings import Settings
from workflows.clients import WorkflowClosed
from workflows.clients.files import complete_file, create_file, delete_file

router = APIRouter(prefix="/v1/files", tags=["files"], dependencies=[Depends(require_api_key)])
webhooks_router = APIRouter(prefix="/webhooks", tags=["provider webhooks"])

log = logging.getLogger(__name__)


def file_id_for(idempotency_key: str | None) -> str:
    """Relay's id (and the upload id): derived from the client's idempotencyKey, so a
    retried request lands on the same workflow."""
    if idempotency_key:
        return "file_" + hashlib.sha256(idempotency_key.encode()).hexdigest()[:24]
    return "file_" + uuid.uuid4().hex[:24]


def _s3(request: Request, settings: Settings) -> Any:
    """One S3 client per app, built on first use (signing needs no connection)."""
    storage.bucket(settings)  # PROVIDER_NOT_CONFIGURED when there is no bucket
    client = getattr(request.app.state, "files_s3", None)
    if client is None:
        client = storage.s3_client(settings)
        request.app.state.files_s3 = client
    return client


def _file_out(row: Row[Any], s3: Any, settings: Settings, *, urls: bool = True) -> FileOut:
    """The file as GET shows it; without `urls` (lists) no URL is signed."""
    ready = row.status == FileStatus.READY.value
    signed = ready and urls
    renditions = [
        RenditionOut(
            name=item["name"],
            width=item["width"],
            height=item["height"],
            bytes=item["bytes"],
            content_type=item["content_type"],
            url=storage.download_url(s3, settings, item["key"]) if signed else None,
        )
        for item in (row.renditions or [])
        if ready
    ]
    return FileOut(
        id=row.id,
        kind=row.kind,
        status=row.status,
        reason=row.reason,
        filename=row.filename,
        content_type=row.detected_type or row.content_type,
        declared_content_type=row.content_type,
        size=row.size if row.size is not None else row.declared_size,
        sha256=row.sha256,
        user_id=row.user_id,
        conversation_id=row.conversation_id,
        message_id=row.message_id,
        metadata=dict(row.metadata or {}),
        url=storage.download_url(s3, settings, row.object_key)
        if signed and row.object_key
        else None,
        renditions=renditions,
        urls_expire_at=datetime.now(UTC) + settings.file_url_ttl if signed else None,
        upload_expires_at=row.upload_expires_at,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


@router.post(
    "",
    status_code=201,
    summary="Start an upload: a presigned POST to S3",
    description="Answers the URL and form fields of a presigned POST whose policy admits "
    "exactly `size` bytes of `contentType` at `temp/{uploadId}/{filename}` until "
    "`expiresAt` (UPLOAD_EXPIRY); S3 refuses anything else. Then POST /v1/files/{id}/complete "
    "(or let S3's event notification do it). `size` past FILE_MAX_BYTES is 413 "
    "PAYLOAD_TOO_LARGE; an unknown kind, or an attachment without conversationId and "
    "messageId, is 422; a second live attachment of the same name in a message is 409.",
    response_model=Envelope[FileUpload],
    responses=error_responses(400, 401, 409, 413, 422, 502, 503),
)
async def create(
    body: FileCreate,
    request: Request,
    engine: EngineDep,
    client: TemporalDep,
    settings: SettingsDep,
) -> dict[str, Any]:
    if body.size > settings.file_max_bytes:
        raise RelayError(
            ErrorCode.PAYLOAD_TOO_LARGE,
            f"size is past FILE_MAX_BYTES ({settings.file_max_bytes} bytes)",
            [{"field": "size", "in": "body", "message": f"at most {settings.file_max_bytes}"}],
        )
    s3 = _s3(request, settings)
    file_id = file_id_for(body.idempotency_key)
    filename = safe_filename(body.filename)
    key = upload_key(file_id, filename)
    view = FileView(
        id=file_id,
        kind=body.kind,
        filename=filename,
        content_type=body.content_type,
        declared_size=body.size,
        user_id=body.user_id,
        conversation_id=body.conversation_id,
        message_id=body.message_id,
        upload_key=key,
    )
    if await asyncio.to_thread(repository.same_name_in_message, engine, view):
        raise RelayError(
            ErrorCode.CONFLICT,
            "the message already has an attachment with this filename",
            [{"field": "filename", "in": "body", "message": "use another name"}],
        )
    recorded = await create_file(client, settings, view)
    if body.idempotency_key:
        require_same_request(
            {
                "kind": (view.kind, recorded.kind),
                "filename": (view.filename, recorded.filename),
                "contentType": (view.content_type, recorded.content_type),
                "size": (view.declared_size, recorded.declared_size),
                "userId": (view.user_id, recorded.user_id),
                "conversationId": (view.conversation_id, recorded.conversation_id),
                "messageId": (view.message_id, recorded.message_id),
            }
        )
    if recorded.status != FileStatus.PENDING_UPLOAD:
        raise RelayError(ErrorCode.CONFLICT, "this idempotencyKey's upload was already completed")
    expires_at = recorded.upload_expires_at
    expires_in = (
        expires_at - datetime.now(UTC) if expires_at is not None else settings.upload_expiry
    )
    post = storage.presigned_upload(
        s3,
        settings,
        key=recorded.upload_key,
        content_type=recorded.content_type,
        size=recorded.declared_size,
        expires_in=max(expires_in, timedelta(seconds=1)),
    )
    upload = FileUpload(
        id=file_id,
        status=recorded.status,
        upload_url=post["url"],
        upload_fields=post["fields"],
        expires_at=expires_at,
        key=recorded.upload_key,
    )
    return ok(upload)


@router.post(
    "/{file_id}/complete",
    summary="The upload is done: check and process it",
    description="Starts processing once the upload is in the bucket (409 CONFLICT before). "
    "Answers the file (status PROCESSING, or where it got to: completing twice is harmless). "
    "Poll GET /v1/files/{id} or subscribe to `file.ready` / `file.rejected`.",
    response_model=Envelope[FileOut],
    responses=error_responses(401, 404, 409, 502, 503),
)
async def complete(
    file_id: str, request: Request, engine: EngineDep, client: TemporalDep, settings: SettingsDep
) -> dict[str, Any]:
    await asyncio.to_thread(repository.load, engine, file_id)
    try:
        await complete_file(client, file_id, CompleteUpload(source="api"))
    except WorkflowClosed:
        pass  # READY or REJECTED already: the read model says which
    row = await asyncio.to_thread(repository.load, engine, file_id)
    return ok(_file_out(row, _s3(request, settings), settings))


def _file_cursor(cursor: str | None) -> tuple[datetime, str] | None:
    """The (created_at, id) of the last file of the previous page (api.pagination's cursor
    format, with a file id); 422 when it is not one."""
    if not cursor:
        return None
    try:
        moment, row_id = json.loads(base64.urlsafe_b64decode(cursor.encode()))
        if not isinstance(row_id, str):
            raise TypeError("the cursor's id is not a file id")
        return datetime.fromisoformat(moment), row_id
    except (binascii.Error, ValueError, TypeError):
        raise RelayError(
            ErrorCode.VALIDATION_ERROR,
            "cursor is not valid",
            [{"field": "cursor", "in": "query", "message": "pass nextCursor unchanged"}],
        ) from None


@router.get(
    "",
    summary="List files, newest first",
    description="Filter by `userId`, `kind` and `status`; paginated (`limit`, `cursor`, "
    "`nextCursor`). Each item is the file as GET /v1/files/{id} shows it, without URLs "
    "(`url`, each rendition's `url` and `urlsExpireAt` are null): signing them for a whole "
    "page is work most listings never use, and they expire; GET the file for fresh ones. "
    "Deleted files are not listed.",
    response_model=Page[FileOut],
    responses=error_responses(401, 422),
)
async def list_files(
    engine: EngineDep,
    settings: SettingsDep,
    user_id: Annotated[str | None, Query(alias="userId", min_length=1, max_length=255)] = None,
    kind: Annotated[FileKind | None, Query()] = None,
    status: Annotated[FileStatus | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
    cursor: Annotated[str | None, Query()] = None,
) -> dict[str, Any]:
    if status == FileStatus.DELETED:
        return page([], None)  # deleted files are gone (404), never listed
    query = repository.files_query(
        user_id=user_id,
        kind=kind.value if kind else None,
        status=status.value if status else None,
    )
    if (after := after_cursor(repository.F, _file_cursor(cursor))) is not None:
        query = query.where(after)
    # The shared loader orders, limits and encodes the next cursor; files' ids are not
    # UUIDs, which its cursor decoder expects, so the cursor is decoded here (same format).
    rows, next_cursor = await newest_first_page(engine, repository.F, query, None, limit)
    return page([_file_out(row, None, settings, urls=False) for row in rows], next_cursor)


@router.get(
    "/{file_id}",
    summary="One file: status, metadata, renditions with signed URLs",
    description="Each URL (the original's and every rendition's) is a presigned S3 GET, or a "
    "CloudFront signed URL when CLOUDFRONT_DOMAIN and its key pair are set, valid "
    "FILE_URL_TTL.",
    response_model=Envelope[FileOut],
    responses=error_responses(401, 404),
)
async def get_file(
    file_id: str, request: Request, engine: EngineDep, settings: SettingsDep
) -> dict[str, Any]:
    row = await asyncio.to_thread(repository.load, engine, file_id)
    return ok(_file_out(row, _s3(request, settings), settings))


@router.delete(
    "/{file_id}",
    summary="Delete the file: its original, every rendition, its upload",
    response_model=Envelope[FileDeleted],
    responses=error_responses(401, 404, 502, 503),
)
async def delete(
    file_id: str, engine: EngineDep, client: TemporalDep, settings: SettingsDep
) -> dict[str, Any]:
    row = await asyncio.to_thread(repository.load, engine, file_id)
    await delete_file(client, settings, repository.view_of(row))
    return ok(FileDeleted(id=file_id))


# --- POST /webhooks/s3 ------------------------------------------------------------------------


def _certificates(request: Request) -> sns.CertificateCache:
    """SNS signing certificates, cached per app."""
    cache = getattr(request.app.state, "sns_certificates", None)
    if cache is None:
        cache = sns.CertificateCache()
        request.app.state.sns_certificates = cache
    return cache  # type: ignore[no-any-return]


@webhooks_router.post(
    "/s3",
    summary="S3 event notifications through SNS (public; verified by SNS's signature)",
    description="An SNS HTTPS subscription's endpoint. Every message is verified (SNS "
    "signature versions 1 and 2, the signing certificate fetched only from "
    "sns.<region>.amazonaws.com) and its TopicArn must be in S3_EVENTS_TOPIC_ARNS: else 400 "
    "INVALID_SIGNATURE and nothing is recorded. A SubscriptionConfirmation is confirmed "
    "(GET of its SubscribeURL; 502 when SNS does not take it, and SNS sends it again). Each "
    "record of a Notification is recorded once in the inbound inbox (event id: bucket, key "
    "and sequencer); an `ObjectCreated:*` record for a file's upload key is forwarded to "
    "the file's workflow (processing starts as with POST /v1/files/{id}/complete), any "
    "other record is IGNORED. A duplicate is 200 with `duplicate: true`; 503 when a record "
    "could not be recorded (SNS retries).",
    response_model=Envelope[S3EventsAccepted],
    responses=error_responses(400, 502, 503),
)
async def s3_webhook(request: Request, engine: EngineDep, settings: SettingsDep) -> dict[str, Any]:
    message = sns.parse(await request.body())
    await sns.verify(message, settings, _certificates(request))
    answer = S3EventsAccepted(type=message.type, message_id=message.message_id)
    if message.type == sns.SUBSCRIPTION_CONFIRMATION:
        await sns.confirm_subscription(message, settings)
        log.info("confirmed the SNS subscription to %s", message.topic_arn)
        answer.confirmed = True
        return ok(answer)
    if message.type != sns.NOTIFICATION:
        log.info("SNS says %s for %s", message.type, message.topic_arn)
        return ok(answer)
    bucket = settings.s3_bucket
    for record in s3_records(message.message):
        target, object_id = await asyncio.to_thread(
            s3_target, record, bucket, lambda file_id: repository.find_view(engine, file_id)
        )
        accepted = await accept_event(
            request,
            engine,
            settings,
            provider=S3_PROVIDER,
            event_id=record.event_id,
            kind=record.event_name,
            payload=record.payload(),
            target=target,
            object_id=object_id,
        )
        answer.events.append(InboundAccepted.model_validate(accepted["data"]))
    return ok(answer)


routers = (router, webhooks_router)
