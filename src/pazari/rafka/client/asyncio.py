"""The asyncio flavour of ``pazari.rafka.client``: the same API, every call awaited."""

from pazari.rafka.client._asyncio import Consumer, Producer
from pazari.rafka.client._core import (
    CommandError,
    CommitError,
    ConsumeError,
    MalformedMessageError,
    Message,
    ProduceError,
    RafkaError,
)

__all__ = [
    "CommandError",
    "CommitError",
    "ConsumeError",
    "Consumer",
    "MalformedMessageError",
    "Message",
    "ProduceError",
    "Producer",
    "RafkaError",
]
