"""`beam-caption report`: totals over an output's Parquet files, and the self-contained HTML
gallery with its small plots.
"""
