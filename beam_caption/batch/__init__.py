"""Batch API mode: request shards written by the pipeline, the Batch API client, the ledger of
submitted batches (batches.json), and collecting the answers into the same rows as realtime.
"""
