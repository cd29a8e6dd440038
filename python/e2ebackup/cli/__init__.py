"""The ``e2ebackup`` command line (entry point ``e2ebackup.cli:main``).

Exit codes: 0 success; 1 the data did not authenticate (wrong key, tampered or truncated) or
another e2ebackup error; 2 bad usage; 3 a file could not be read or written, or a backup or
restore is incomplete; 130 interrupted (:class:`e2ebackup.cli.common.Exit`).
"""

from e2ebackup.cli.main import main

__all__ = ["main"]
