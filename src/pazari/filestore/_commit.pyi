Item = tuple[bytes, bytes | None, int, bytes, bytes]

STAGE_CREATE: int
STAGE_WRITE: int
STAGE_SYNC: int
STAGE_MKDIR: int
STAGE_RENAME: int

SYNC_NONE: int
SYNC_FILE: int
SYNC_BATCH: int

def commit_files(items: list[Item], sync: int = ..., fs_fd: int = -1
                 ) -> list[tuple[int, int]]: ...
