"""`python -m felix_train SPEC` runs a job; `python -m felix_train <command> ...` is the CLI."""

from felix_train.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
