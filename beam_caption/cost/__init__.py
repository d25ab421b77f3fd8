"""Tokens and dollars: the published image-token rules, the price table, and `beam-caption
estimate` (a header-only token tally and the bill by model and --max-side).
"""
