"""The downloader service (spec ../shared/specs/downloader.md): ``api`` enqueues download
jobs in Redis, ``processor`` downloads them per aggregation with a concurrency cap, and
``notifier`` delivers the callbacks over HTTP or Kafka."""
