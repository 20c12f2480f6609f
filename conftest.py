"""Root conftest: the real-service fixtures (redis-server, tansu, podman) and the daemon
spawner, for tests/ and bench/ alike."""

pytest_plugins = ["tests.support.plugin"]
