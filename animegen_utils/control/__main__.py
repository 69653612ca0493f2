"""``python -m animegen_utils.control train [--steps N ...]``: retrain the built-in ControlNet."""

import sys

from .train import main

if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] != "train":
        sys.exit("usage: python -m animegen_utils.control train [options]   (see `train --help`)")
    main(sys.argv[2:])
