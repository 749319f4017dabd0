"""Exit 0 when Kafka answers a metadata request (a real round trip, not an open port) and, given a
count, reports at least that many brokers (a cluster's quorum is up and every node registered)."""

import sys

from confluent_kafka.admin import AdminClient


def main() -> int:
    bootstrap = sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1:9092"
    expected = int(sys.argv[2]) if len(sys.argv) > 2 else 1
    admin = AdminClient({"bootstrap.servers": bootstrap, "socket.timeout.ms": 2000})
    try:
        metadata = admin.list_topics(timeout=2)
    except Exception as exc:  # any failure means "not ready yet"; the caller retries
        print(f"kafka not ready: {exc}", file=sys.stderr)
        return 1
    if len(metadata.brokers) < expected:
        print(f"kafka not ready: {len(metadata.brokers)} of {expected} brokers registered", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
