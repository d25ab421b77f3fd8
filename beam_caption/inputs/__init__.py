"""Where images come from and how they are made ready to send: input expansion (globs,
manifests, URLs), reading bytes (Beam FileSystems and guarded https:// downloads), and decoding,
orienting, shrinking and re-encoding each image.
"""
