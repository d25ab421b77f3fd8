"""Flex Template entry point (FLEX_TEMPLATE_PYTHON_PY_FILE): `beam-caption run` on Dataflow.

The launcher runs `python launch.py --input=gs://... --max_side=512 --project=... ...`; the logic
lives in the installed package (beam_caption.cli.template.launch) so it is unit-tested and so
nothing defined here, in __main__, is pickled by value into the job.
"""

import sys

from beam_caption.cli.template import launch

if __name__ == "__main__":
    sys.exit(launch(sys.argv[1:]))
