"""The worker side of tts-stream: consume, deduplicate, synthesise, store, publish, commit."""
