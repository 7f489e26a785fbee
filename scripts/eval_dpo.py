#!/usr/bin/env python
"""`felix-train eval SOURCE DATA --json` under its old name: preference accuracy of a decoder LLM on held-out preference pairs (felix_train/evaluate/)."""
import sys

from felix_train.cli import main

if __name__ == "__main__":
    sys.exit(main(["eval", *sys.argv[1:], "--json"]))
