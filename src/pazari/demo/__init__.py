"""A minimal daemon on the shared runtime: it proves the runtime end to end and nothing more."""
