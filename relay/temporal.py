"""The one way Relay connects to Temporal: API, worker, CLI and tests all call `connect`."""

from __future__ import annotations

import dataclasses

from temporalio.client import Client, Interceptor
from temporalio.contrib.opentelemetry import TracingInterceptor
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.converter import DataConverter, DefaultFailureConverterWithEncodedAttributes
from temporalio.runtime import Runtime

from relay.codec import EncryptionCodec
from relay.crypto import Keyring
from relay.settings import Settings


def data_converter(keyring: Keyring) -> DataConverter:
    """Pydantic-aware payloads, encrypted; failure messages and stack traces encoded too."""
    return dataclasses.replace(
        pydantic_data_converter,
        payload_codec=EncryptionCodec(keyring),
        failure_converter_class=DefaultFailureConverterWithEncodedAttributes,
    )


async def connect(
    settings: Settings,
    keyring: Keyring,
    *,
    runtime: Runtime | None = None,
    lazy: bool = False,
    interceptors: list[Interceptor] | None = None,
) -> Client:
    """A client with Relay's data converter and tracing interceptor.

    `lazy=True` lets the API start while Temporal is down: the connection is made on
    first use and re-made by the SDK after an outage, which is what /ready reports.
    """
    return await Client.connect(
        settings.temporal_target,
        namespace=settings.temporal_namespace,
        data_converter=data_converter(keyring),
        interceptors=[TracingInterceptor(), *(interceptors or [])],
        runtime=runtime,
        lazy=lazy,
        api_key=settings.temporal_api_key.get_secret_value() if settings.temporal_api_key else None,
        tls=settings.temporal_tls,
    )
