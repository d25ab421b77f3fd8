"""Tokens and dollars: the published image-token rules, the price table, and `beam-caption
estimate` (a header-only token tally and the bill by model and --max-side).

tokens.py holds the token rules, pricing.py the price table and the one money format
(format_usd), measure.py reads an image's size from its header and counts its prompt tokens,
tally.py sums them, estimate.py is the Beam pipeline that does both, and bill.py turns the tally
into the bill.
"""
