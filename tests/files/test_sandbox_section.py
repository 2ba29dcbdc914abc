"""/sandbox's S3 section: the sandbox bucket's objects under Relay's prefixes, newest
first and bounded, read from the real S3 sandbox (moto behind the POST-policy check) by
the app under uvicorn on loopback. Shown in development only, when S3_ENDPOINT_URL is
loopback; never the AWS secret."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx
from sqlalchemy.engine import Engine

from api.app import create_app
from relay.sandbox.s3 import S3Sandbox
from relay.sandbox.sections import EVENTS_SHOWN, S3Section
from relay.settings import Settings
from tests.conftest import ServerThread, free_port
from tests.files.conftest import s3_settings
from tests.support.api import closed_address


@contextmanager
def serving(engine: Engine, settings: Settings) -> Iterator[str]:
    with ServerThread(create_app(settings, engine=engine)) as server:
        yield server.url


def development(make_settings: Callable[..., Settings], **overrides: Any) -> Settings:
    return make_settings(relay_env="development", temporal_address=closed_address(), **overrides)


def table(text: str, name: str) -> str:
    found = re.search(rf'<table id="s3-{name}">(.*?)</table>', text, re.S)
    assert found, text
    return found.group(1)


async def test_the_section_lists_each_prefix_newest_first_with_size(
    engine: Engine, make_settings: Callable[..., Settings], s3: S3Sandbox
) -> None:
    client = s3.client()
    client.put_object(Bucket=s3.bucket, Key="temp/f1/a.png", Body=b"x" * 7)
    client.put_object(Bucket=s3.bucket, Key="avatars/u1/f2/old.png", Body=b"old")
    time.sleep(1.1)  # S3's LastModified has whole seconds
    client.put_object(Bucket=s3.bucket, Key="avatars/u1/f3/new.png", Body=b"newer")
    client.put_object(Bucket=s3.bucket, Key="elsewhere/not-shown.txt", Body=b"-")
    settings = development(make_settings, **s3_settings(s3))
    with serving(engine, settings) as url:
        async with httpx.AsyncClient(base_url=url) as http:
            page = await http.get("/sandbox")
    assert page.status_code == 200, page.text
    text = page.text
    assert 'id="sandbox-s3"' in text
    temp = table(text, "temp")
    assert re.search(
        r'<tr data-id="temp/f1/a.png"><td>temp/f1/a.png</td><td>7</td><td>\d{4}-', temp
    )
    avatars = table(text, "avatars")
    assert avatars.index("avatars/u1/f3/new.png") < avatars.index("avatars/u1/f2/old.png")
    assert "<td>5</td>" in avatars and "<td>3</td>" in avatars
    assert "Nothing under attachments/ yet." in table(text, "attachments")
    assert "Nothing under thumbnails/ yet." in table(text, "thumbnails")
    assert "elsewhere/" not in text
    assert s3.secret_access_key not in text


async def test_the_listing_is_bounded(
    engine: Engine, make_settings: Callable[..., Settings], s3: S3Sandbox
) -> None:
    client = s3.client()
    extra = 3
    for index in range(EVENTS_SHOWN + extra):
        client.put_object(Bucket=s3.bucket, Key=f"thumbnails/m1/thumb-{index:03}.png", Body=b"t")
    settings = development(make_settings, **s3_settings(s3))
    with serving(engine, settings) as url:
        async with httpx.AsyncClient(base_url=url) as http:
            page = await http.get("/sandbox")
    thumbnails = table(page.text, "thumbnails")
    assert thumbnails.count("<tr data-id=") == EVENTS_SHOWN
    assert f"{extra} older not shown" in thumbnails


async def test_no_s3_section_outside_development_or_for_a_real_bucket(
    make_settings: Callable[..., Settings], s3: S3Sandbox
) -> None:
    assert S3Section.applies(development(make_settings, **s3_settings(s3)))
    assert not S3Section.applies(make_settings(**s3_settings(s3)))  # RELAY_ENV=test
    real = {**s3_settings(s3), "s3_endpoint_url": None}
    assert not S3Section.applies(development(make_settings, **real))
    assert not S3Section.applies(development(make_settings))  # no bucket at all


async def test_a_sandbox_that_is_down_is_reported_not_a_500(
    engine: Engine, make_settings: Callable[..., Settings], s3: S3Sandbox
) -> None:
    down = {**s3_settings(s3), "s3_endpoint_url": f"http://127.0.0.1:{free_port()}"}
    with serving(engine, development(make_settings, **down)) as url:
        async with httpx.AsyncClient(base_url=url) as http:
            page = await http.get("/sandbox")
            control = await http.post("/sandbox/s3/anything", headers={"Origin": url})
    assert page.status_code == 200
    assert 'id="sandbox-s3"' in page.text
    assert 'class="problem"' in page.text and "did not answer" in page.text
    assert control.status_code == 404
