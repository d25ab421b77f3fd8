"""`beam-caption estimate`: count every input's tokens from its image header, in a Beam pipeline
that reads no pixels and calls no API, then the bill by model and --max-side (cost/ holds the
token rules and prices it uses).
"""
