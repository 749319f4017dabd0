"""The worker core: pure logic over ports (no Kafka, Redis, S3 or torch imports)."""
