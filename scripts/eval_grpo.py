#!/usr/bin/env python
"""`felix-train eval SOURCE DATA --json` under its old name: mean reward and numeric accuracy of greedy answers to held-out prompts (felix_train/evaluate/)."""
import sys

from felix_train.cli import main

if __name__ == "__main__":
    sys.exit(main(["eval", *sys.argv[1:], "--json"]))
