"""SecantusDB as the test suite runs it: `python tests/secantus_server.py PORT`, an in-memory server on
127.0.0.1:PORT until SIGTERM.

Its command line (`secantusd-py`) cannot set the transaction lifetime, and its 60 s default (mongod's
transactionLifetimeLimitSeconds) made a process killed inside a transaction hold its documents for a minute: the
multi-process test waited that long before the survivors could go on. Here it is TRANSACTION_LIFETIME_SECONDS, as
`mongod --setParameter transactionLifetimeLimitSeconds=5` would have it. A live transaction idle that long is
aborted too; the MongoDB store's transactions (pymongo's `with_transaction`) retry on the transient error that
answers, as against mongod."""

from __future__ import annotations

import signal
import sys
from types import FrameType

from secantus.server import SecantusDBServer

TRANSACTION_LIFETIME_SECONDS = 5.0


def main(port: int) -> None:
    server = SecantusDBServer(
        "127.0.0.1",
        port,
        ":memory:",
        enable_test_commands=False,
        transaction_lifetime_seconds=TRANSACTION_LIFETIME_SECONDS,
    )

    def stop(signum: int, frame: FrameType | None) -> None:
        server.stop()
        sys.exit(0)

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    server.start()
    server.wait()


if __name__ == "__main__":
    main(int(sys.argv[1]))
