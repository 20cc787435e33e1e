"""``python -m edgeinc`` and the ``edgeinc`` command.

Ctrl-C is handled from the first instruction: the command line imports PyTorch and friends for a
second or two, and an interrupt then must end quietly (status 130), not with an import traceback.
"""

import signal
import sys


def _interrupted(_signum, _frame) -> None:
    print("interrupted", file=sys.stderr)
    raise SystemExit(130)


def run() -> int:
    previous = signal.signal(signal.SIGINT, _interrupted)
    from .cli import main  # noqa: E402  (after the handler: this import is the slow part)

    signal.signal(signal.SIGINT, previous)  # main() handles KeyboardInterrupt itself from here on
    return main()


if __name__ == "__main__":
    raise SystemExit(run())
