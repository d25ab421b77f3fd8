"""Google Cloud Dataflow: the Flex Template's metadata, generated from the run options, and the
launcher's mapping of template parameters to flags.
"""
