"""pazari: scratchd, rafka, downloader and mistry on one asyncio runtime."""

__version__ = "0.1.0"
