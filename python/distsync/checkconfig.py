"""``python -m distsync.checkconfig FILE``: load FILE the way every command does, nothing else.

Silent with status 0 when the file is a valid configuration; otherwise the one-line reason
(file, key, what is wrong; never a value) on stderr and status 2. It contacts no store, so
configuration management can check a candidate file before it replaces the live one (the
Salt formula's ``check_cmd``), and an operator can ask why a file is refused.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from distsync.config import load_config
from distsync.errors import DistsyncError

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1 or args[0].startswith("-"):
        print("usage: python -m distsync.checkconfig FILE", file=sys.stderr)
        return 2
    try:
        load_config(args[0])
    except DistsyncError as exc:
        print(f"distsync: error: {exc}", file=sys.stderr)
        return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
