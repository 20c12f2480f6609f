from typing import Any

def encode_query(
    query: bytes,
    id: str,
    tenant: str,
    type: str,
    received_at: int,
    visitor_id: str,
    url: str | None,
    ip: str | None,
    user_agent: str | None,
    bot: bool,
) -> bytes: ...
def encode_fields(
    fields: dict[str, Any],
    id: str,
    tenant: str,
    type: str,
    received_at: int,
    visitor_id: str,
    url: str | None,
    ip: str | None,
    user_agent: str | None,
    bot: bool,
) -> bytes: ...

def frame_query(
    pending: bytearray,
    tenant_raw: bytes,
    key: bytes,
    limit: int,
    query: bytes,
    id: str,
    tenant: str,
    type: str,
    received_at: int,
    visitor_id: str,
    url: str | None,
    ip: str | None,
    user_agent: str | None,
    bot: bool,
) -> int: ...

class Uuid7:
    def new(self, now_ms: int | None = None) -> str: ...

def new_id(now_ms: int | None = None) -> str: ...

def sync_loop(requests: int, results: int) -> None: ...
