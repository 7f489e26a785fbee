"""`python -m felix_train.service.serving --job-dir DIR --port P`: the inference process (`server.main`)."""

from felix_train.service.serving.server import main

raise SystemExit(main())
