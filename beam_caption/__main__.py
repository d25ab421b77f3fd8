"""`python -m beam_caption` is the same as the `beam-caption` command."""

from beam_caption.cli import console

if __name__ == "__main__":
    console()
