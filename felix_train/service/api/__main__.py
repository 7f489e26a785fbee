"""`python -m felix_train.service.api`: the same as `felix-train serve`."""

from felix_train.service.api.app import main

if __name__ == "__main__":
    raise SystemExit(main())
