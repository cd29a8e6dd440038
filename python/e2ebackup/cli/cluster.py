"""``encrypt --dask`` / ``decrypt --dask``: every file of a folder, on a Dask cluster
(:mod:`e2ebackup.dask`, docs/SCALE.md). The scheduling is Dask's; this only reads the
credential once, connects, and reports."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from e2ebackup import errors
from e2ebackup.cli import recipients as recipient_options
from e2ebackup.cli.common import Exit, count
from e2ebackup.cli.credentials import kdf_from_args, read_recovery_key
from e2ebackup.errors import InvalidArgument
from e2ebackup.keys import read_key_file

if TYPE_CHECKING:
    import distributed

    from e2ebackup.dask import Report

#: Failures that mean "this input does not open with this credential", exit 1 as for one
#: file; anything else (a file that could not be read or written, a lost batch) is exit 3.
_NOT_AUTHENTIC = (errors.InvalidTag, errors.WrongPassword, errors.WrongRecoveryKey)


def add_options(cmd: argparse.ArgumentParser) -> None:
    cmd.add_argument(
        "--dask",
        metavar="ADDRESS",
        help="SRC and DST are folders: every file of SRC into DST (encrypt adds .e2e, decrypt "
        "removes it), on the Dask cluster whose scheduler is ADDRESS (tcp://host:8786), or "
        "'local' for a cluster of this machine's cores; the key goes to the workers, never "
        "through the scheduler; needs pip install 'e2ebackup[dask]' (docs/SCALE.md)",
    )
    cmd.add_argument(
        "--skip-existing",
        action="store_true",
        help="with --dask: leave outputs that exist (a rerun resumes an interrupted one)",
    )


def run(args: argparse.Namespace, *, encrypting: bool) -> int:
    """The whole folder ``args.src`` into ``args.dst`` on the cluster at ``args.dask``."""
    from e2ebackup import dask as bulk  # the dask extra: a missing one is named by main

    if "-" in (args.src, args.dst):
        raise InvalidArgument("--dask works on folders: SRC and DST cannot be -")
    if not os.path.isdir(args.src):
        raise InvalidArgument(f"--dask: {args.src} is not a folder")
    if getattr(args, "vault", None):
        raise InvalidArgument("--dask does not take --vault: one vault login per file")
    if getattr(args, "new_recovery_key", False) or getattr(args, "qr", None):
        raise InvalidArgument("--dask takes an existing recovery key (--recovery-key-file)")
    credential = _credential(args, encrypting=encrypting)
    with dask_client(args.dask) as client:
        run_files = bulk.encrypt_files if encrypting else bulk.decrypt_files
        report = run_files(
            args.src,
            args.dst,
            client=client,
            algorithm=args.algorithm,
            skip_existing=args.skip_existing,
            **credential,
        )
    return _summary(report, "encrypted" if encrypting else "decrypted", quiet=args.quiet)


def _credential(args: argparse.Namespace, *, encrypting: bool) -> dict[str, Any]:
    """The keyword arguments of encrypt_files/decrypt_files that carry the credential; read
    (and prompted for) once, here, before anything is sent."""
    if args.key_file:
        with open(args.key_file, "rb") as f:
            return {"key": read_key_file(f.read()), "context": args.context.encode()}
    if not encrypting:
        return recipient_options.read_opening_credential(args)
    recovery_key = read_recovery_key(args)
    recipients = recipient_options.read_recipients(args)
    if args.no_password and recovery_key is None and not recipients:
        raise InvalidArgument("--no-password needs a recovery key or recipients")
    return {
        "password": recipient_options.sealing_password(args, recipients),
        "recovery_key": recovery_key,
        "recipients": recipients,
        "kdf": kdf_from_args(args),
    }


#: The Dask setting of the environment its workers start with that slows allocations down.
TRIM_SETTING = "distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_"


@contextlib.contextmanager
def dask_client(address: str) -> Iterator[distributed.Client]:
    """A client of the scheduler at ``address``, or of a ``LocalCluster`` of one single-threaded
    worker process per core for ``local`` (started and stopped here)."""
    import dask.config
    import distributed

    # distributed ships no type information for these constructors.
    if address != "local":
        with distributed.Client(address) as client:  # type: ignore[no-untyped-call]
            yield client
        return
    # One single-threaded worker process per core: the tasks encrypt with one thread each.
    # Dask starts its workers with MALLOC_TRIM_THRESHOLD_=65536, which also stops glibc from
    # raising its mmap threshold: every 16 MiB pack and 1 MiB blob is then fresh pages from
    # the kernel (verify --read-data ran 3-5 times slower). A cluster that lives for one
    # command keeps glibc's own behaviour (docs/SCALE.md, "Verifying a repository on Dask").
    cores = os.cpu_count() or 1
    with dask.config.set({TRIM_SETTING: None}):
        local = distributed.LocalCluster(  # type: ignore[no-untyped-call]
            n_workers=cores, threads_per_worker=1, processes=True, dashboard_address=None
        )
    with local, distributed.Client(local) as client:  # type: ignore[no-untyped-call]
        yield client


def _summary(report: Report, verb: str, *, quiet: bool) -> int:
    for failure in report.failures:
        print(f"e2ebackup: {failure.path}: {failure.error}", file=sys.stderr)
    if not quiet:
        skipped = f", {count(report.skipped, 'output')} kept as they were" if report.skipped else ""
        print(
            f"{verb} {count(report.files, 'file')} ({report.bytes / 1e6:,.1f} MB) in "
            f"{count(report.batches, 'task')}{skipped}; {len(report.failures)} failed",
            file=sys.stderr,
        )
    if not report.failures:
        return Exit.OK
    kinds = [getattr(errors, f.error, None) for f in report.failures]
    if all(isinstance(k, type) and issubclass(k, _NOT_AUTHENTIC) for k in kinds):
        return Exit.FAILED
    return Exit.INCOMPLETE
