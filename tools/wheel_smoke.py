"""Smoke test of an installed wheel, run by tools/build_wheels.sh in a fresh virtual environment.

Run from outside the checkout, so that ``import e2ebackup`` can only find the installed wheel:
the API round trip (one-shot, streaming, the file reader and writer on pathlib paths), tamper
detection, ``__version__`` against the wheel's file name, and the command line's init, backup
and restore, compared file by file.
"""

from __future__ import annotations

import filecmp
import os
import pathlib
import subprocess
import sys
import sysconfig
import tempfile


def check_installed_from_wheel(wheel_name: str) -> None:
    import e2ebackup

    site = pathlib.Path(sysconfig.get_paths()["purelib"]).resolve()
    where = pathlib.Path(e2ebackup.__file__).resolve()
    assert site in where.parents, f"e2ebackup imported from {where}, not from {site}"
    expected_version = wheel_name.split("-")[1]
    assert e2ebackup.__version__ == expected_version, e2ebackup.__version__


def check_api(folder: pathlib.Path) -> None:
    import e2ebackup
    from e2ebackup.errors import InvalidTag

    key = e2ebackup.generate_key()
    data = os.urandom(200_000)
    ciphertext = e2ebackup.encrypt(key, data, context=b"smoke")
    assert len(ciphertext) == e2ebackup.ciphertext_length(len(data))
    assert e2ebackup.decrypt(key, ciphertext, context=b"smoke") == data
    tampered = bytearray(ciphertext)
    tampered[len(tampered) // 2] ^= 1
    try:
        e2ebackup.decrypt(key, bytes(tampered), context=b"smoke")
    except InvalidTag:
        pass
    else:
        raise AssertionError("a modified message decrypted")

    encryptor = e2ebackup.Encryptor(key, b"stream")
    stream = encryptor.update(data[:70_000]) + encryptor.update(data[70_000:])
    stream += encryptor.finalize()
    decryptor = e2ebackup.Decryptor(key, b"stream")
    assert decryptor.update(stream) + decryptor.finalize() == data

    path = folder / "data.e2e"
    with e2ebackup.open(path, "wb", key=key) as writer:
        writer.write(data)
    with e2ebackup.open(path, "rb", key=key) as reader:
        reader.seek(100_000)
        assert reader.read(1000) == data[100_000:101_000]


def check_cli(folder: pathlib.Path) -> None:
    source = folder / "source"
    (source / "nested").mkdir(parents=True)
    (source / "a.bin").write_bytes(os.urandom(300_000))
    (source / "nested" / "b.txt").write_text("hello from the smoke test\n")
    passphrase = "smoke test passphrase, long enough"  # noqa: S105  # a throwaway repository
    environment = dict(os.environ, E2EBACKUP_PASSWORD=passphrase)
    executable = pathlib.Path(sys.executable).with_name("e2ebackup")
    repo, target = folder / "repo", folder / "restored"
    for arguments in (
        ["init", "-r", str(repo)],
        ["backup", "-r", str(repo), str(source)],
        ["restore", "-r", str(repo), "latest", "--target", str(target)],
    ):
        # The installed console script, with fixed arguments.
        subprocess.run([executable, *arguments], env=environment, check=True, timeout=300)  # noqa: S603
    restored = next(p.parent for p in target.rglob("a.bin"))
    comparison = filecmp.dircmp(source, restored)
    assert comparison.diff_files == comparison.left_only == comparison.right_only == []
    with (source / "a.bin").open("rb") as a, (restored / "a.bin").open("rb") as b:
        assert a.read() == b.read()
    assert (restored / "nested" / "b.txt").read_text() == "hello from the smoke test\n"


def main() -> None:
    wheel_name = pathlib.Path(sys.argv[1]).name
    check_installed_from_wheel(wheel_name)
    with tempfile.TemporaryDirectory() as folder:
        check_api(pathlib.Path(folder))
        check_cli(pathlib.Path(folder))
    print(f"smoke test passed: {wheel_name} on Python {sys.version.split()[0]}")


if __name__ == "__main__":
    main()
