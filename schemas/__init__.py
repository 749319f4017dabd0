"""The event contract: Avro schemas (every released version), the codec and the key functions."""
