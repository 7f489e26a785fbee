import signal

import pytest


@pytest.fixture(autouse=True)
def _restore_signals():
    """run_job installs SIGTERM/SIGINT handlers for its job; give pytest its own back afterwards."""
    saved = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    yield
    for s, handler in saved.items():
        signal.signal(s, handler)
