"""Exit 0 when a Kafka broker answers a metadata request (a real round trip, not an open port)."""

import sys

from confluent_kafka.admin import AdminClient


def main() -> int:
    bootstrap = sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1:9092"
    admin = AdminClient({"bootstrap.servers": bootstrap, "socket.timeout.ms": 2000})
    try:
        metadata = admin.list_topics(timeout=2)
    except Exception as exc:  # any failure means "not ready yet"; the caller retries
        print(f"kafka not ready: {exc}", file=sys.stderr)
        return 1
    return 0 if metadata.brokers else 1


if __name__ == "__main__":
    sys.exit(main())
