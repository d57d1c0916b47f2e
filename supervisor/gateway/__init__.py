"""The local gateway: the agents people already run (Claude Code, Codex, Aider, SDK scripts) under our caps.

``codecs`` holds the client protocols (pure code: parse requests, encode answers and errors, read usage from
a copy of an upstream's bytes); the server, keys, routing and caps live beside it.
"""
