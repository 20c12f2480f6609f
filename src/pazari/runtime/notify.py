"""sd_notify(3) without libsystemd: one datagram to ``$NOTIFY_SOCKET``.

READY=1 once listeners are bound, STOPPING=1 on shutdown, WATCHDOG=1 every half of
``$WATCHDOG_USEC`` when systemd asks for a watchdog (systemd.service(5), WatchdogSec=).
"""

from __future__ import annotations

import asyncio
import os
import socket


def sd_notify(message: str) -> bool:
    """Send ``message`` to the service manager; False when there is none (not under systemd)."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):  # abstract namespace socket
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(message.encode())
    except OSError:
        return False
    return True


def watchdog_interval() -> float | None:
    """Seconds between WATCHDOG=1 pings, or None when no watchdog is configured for us."""
    usec = os.environ.get("WATCHDOG_USEC")
    if not usec or not usec.isdigit() or int(usec) == 0:
        return None
    pid = os.environ.get("WATCHDOG_PID")
    if pid and pid.isdigit() and int(pid) != os.getpid():
        return None
    return int(usec) / 2_000_000


async def watchdog_loop(interval: float) -> None:
    """Ping the watchdog while the event loop is alive; a stuck loop stops the pings."""
    while True:
        sd_notify("WATCHDOG=1")
        await asyncio.sleep(interval)
