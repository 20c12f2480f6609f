"""A Python rafka driver with rafka-rb's semantics (spec §4), on redis-py.

``pazari.rafka.client`` is the blocking flavour (``redis.Redis``);
``pazari.rafka.client.asyncio`` has the same classes with coroutine methods
(``redis.asyncio``)::

    from pazari.rafka.client import Consumer, Producer

    Producer(port=6380).produce("greetings", b"hello", key="k1")
    consumer = Consumer("greetings", group="myapp")
    with consumer.consuming(timeout=5) as msg:   # acked only if the body did not raise
        ...

In the asyncio flavour ``consume`` itself is that context manager too
(``async with consumer.consume(5) as msg:``), besides ``await consumer.consume(5)``.
"""

from pazari.rafka.client._core import (
    CommandError,
    CommitError,
    ConsumeError,
    MalformedMessageError,
    Message,
    ProduceError,
    RafkaError,
)
from pazari.rafka.client._sync import Consumer, Producer

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
