"""The producer side of tts-stream: client library, backfill and CLI (no torch, no worker deps)."""
