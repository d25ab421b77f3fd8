"""The Beam job: its graph, the PTransforms (PrepareImages, CaptionImages, WriteCaptions), the rows
and their Parquet schemas, structured answers, the answer journal, resume, and the launcher's
view of the output folder.
"""
