"""What a worker process builds once and hands to every capability's activity class."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.engine import Engine
from temporalio.client import Client

from relay.crypto import Keyring
from relay.ledger import Ledger
from relay.settings import Settings


@dataclass
class WorkerContext:
    """The worker's shared resources; activity classes add what they open to `closers`,
    which the worker awaits on shutdown."""

    settings: Settings
    engine: Engine
    keyring: Keyring
    client: Client
    ledger: Ledger
    closers: list[Callable[[], Any]] = field(default_factory=list)
