Item = tuple[bytes, bytes | None, int, bytes, bytes]

STAGE_CREATE: int
STAGE_WRITE: int
STAGE_SYNC: int
STAGE_MKDIR: int
STAGE_RENAME: int

def commit_files(items: list[Item], sync: bool = True) -> list[tuple[int, int]]: ...
