"""The chat-completions API without I/O: building a request, parsing a response, the typed error
taxonomy, the rate-limit headers and the retry policy. Nothing here opens a socket or imports
aiohttp; the engine (and the Batch API client) do the I/O.
"""
