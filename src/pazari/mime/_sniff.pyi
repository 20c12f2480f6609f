EMPTY: str
OCTET_STREAM: str
TEXT_PLAIN: str

def sniff(data: bytes) -> str: ...
