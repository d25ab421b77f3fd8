"""Tokens and dollars: the published image-token rules and the price table.

tokens.py holds the token rules; pricing.py the price table, the price of a model however a
gateway or deployment names it (provider prefixes, dated snapshots, --price-as), the one cost
of a usage (cost_usd) and the one money format (format_usd). `beam-caption estimate` (the
estimate/ package) builds the bill from both.
"""
