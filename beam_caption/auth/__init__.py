"""The API key: found on the worker (Secret Manager, a file or the environment), never stored in
options, and kept out of every log line.
"""
