"""scratchd: a multi-tenant web-analytics collector (spec ../shared/specs/scratchd.md, issue 6).

Requests become canonical events (``pazari.event``), go to a durable local spool
(``spool``) and are forwarded from there to each tenant's sinks (``sinks``, ``forwarder``).
"""
