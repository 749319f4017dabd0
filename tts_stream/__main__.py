from tts_stream.cli import main

main()
