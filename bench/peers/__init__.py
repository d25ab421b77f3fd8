"""The systems a user would pick instead of beam-caption, each a script run in its own process.

Each peer reads the same list file of images, sends the same prompt and model to the same
simulator and writes one JSON result (see common.write_result) that bench/run.py reads.
"""
