from collections.abc import Callable
from typing import Any

def produce_run(
    batch: list[Any],
    i: int,
    names: frozenset[bytes],
    routes: dict[bytes | None, tuple[str, bytes | None]],
    produce: Callable[[str, bytes, bytes | None], object],
    reply: Callable[[int], object],
) -> int: ...
