"""``python -m animegen_utils.reference train [--steps N ...]``: retrain the built-in IP-Adapter."""

import sys

from .train import main

if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] != "train":
        sys.exit("usage: python -m animegen_utils.reference train [options]   (see `train --help`)")
    main(sys.argv[2:])
