"""Kafka callbacks (spec §4 Kafka backend): produce the payload to topic ``dst``; delivered
means librdkafka's delivery report came back without error. Every ``backends.kafka`` key is
a librdkafka property (``go.*`` keys belonged to the Go client and are dropped)."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import confluent_kafka

from pazari.downloader.backends import DeliveryError

FLUSH_TIMEOUT = 5.0


def _librdkafka(settings: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in settings.items():
        if key.startswith("go."):
            continue
        if isinstance(value, bool):
            value = "true" if value else "false"
        out[key] = value
    return out


class KafkaBackend:
    def __init__(self, settings: dict[str, Any]) -> None:
        self.conf = _librdkafka(settings)
        self.producer: Any = None
        self._stop = threading.Event()
        self._poller: threading.Thread | None = None

    async def start(self) -> None:
        self.producer = confluent_kafka.Producer(self.conf)
        self._poller = threading.Thread(target=self._poll, name="kafka-delivery", daemon=True)
        self._poller.start()

    def _poll(self) -> None:
        # Delivery reports are served by poll(); they resolve futures on the event loop.
        while not self._stop.is_set():
            self.producer.poll(0.1)

    async def notify(self, dst: str, payload: bytes, headers: dict[str, str]) -> None:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()

        def report(err: Any, _msg: Any) -> None:
            def resolve() -> None:
                if done.done():
                    return
                if err is not None:
                    done.set_exception(DeliveryError(str(err.str() if hasattr(err, "str")
                                                         else err)))
                else:
                    done.set_result(None)
            loop.call_soon_threadsafe(resolve)

        try:
            self.producer.produce(dst, value=payload, headers=list(headers.items()) or None,
                                  on_delivery=report)
        except (confluent_kafka.KafkaException, BufferError, TypeError) as exc:
            raise DeliveryError(str(exc)) from None
        await done

    async def stop(self) -> None:
        if self.producer is None:
            return
        remaining = await asyncio.to_thread(self.producer.flush, FLUSH_TIMEOUT)
        self._stop.set()
        if self._poller is not None:
            self._poller.join(timeout=2)
        if remaining:
            raise RuntimeError(f"{remaining} Kafka messages were not flushed")
