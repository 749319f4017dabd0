"""`tts-stream console`: a small web console for operators (docs/console.md).

Off unless started, bound to 127.0.0.1 unless told otherwise, and behind a token whenever it
listens anywhere else. It is a shell over tts_stream.ops; Starlette, uvicorn and Jinja2 come
with the `console` extra and are imported only by `create_app` and the command.
"""
