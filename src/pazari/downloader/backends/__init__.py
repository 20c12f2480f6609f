"""Notifier backends (spec §4): ``http`` and ``kafka``. ``notify`` returns when the callback
is delivered and raises :class:`DeliveryError` otherwise (at-least-once)."""

from __future__ import annotations

from typing import Any, Protocol

from pazari.downloader.config import NotifierConfig


class DeliveryError(Exception):
    """The callback was not delivered; the text goes to CallbackMeta."""


class Backend(Protocol):
    async def start(self) -> None: ...

    async def notify(self, dst: str, payload: bytes, headers: dict[str, str]) -> None: ...

    async def stop(self) -> None: ...


def build(name: str, settings: dict[str, Any], notifier: NotifierConfig) -> Backend:
    if name == "http":
        from pazari.downloader.backends.http import HttpBackend

        return HttpBackend(settings, notifier)
    if name == "kafka":
        from pazari.downloader.backends.kafka import KafkaBackend

        return KafkaBackend(settings)
    raise ValueError(f"unknown backend {name!r}")
