"""tts-stream: the command-line shell that joins the producer and worker sides.

`producer` and `consumer` never import each other; this package is where their commands meet.
"""

__version__ = "0.1.0"
