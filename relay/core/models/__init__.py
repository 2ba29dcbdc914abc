"""Relay's tables. Import every model module here so Alembic and tests see them all."""

from sqlmodel import SQLModel

from relay.core.models.platform import ApiKey, ProviderCall, ProviderCallStatus

metadata = SQLModel.metadata

__all__ = ["ApiKey", "ProviderCall", "ProviderCallStatus", "metadata"]
