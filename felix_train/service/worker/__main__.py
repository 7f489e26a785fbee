"""`python -m felix_train.service.worker`: the same as `felix-train worker` (`cli.main`)."""

from felix_train.service.worker.cli import main

raise SystemExit(main())
