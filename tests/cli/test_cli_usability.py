"""What a new user meets at the command line (issue 16): missing extras, secret files' modes,
exit codes (also Ctrl-C, on a real process), help, suggestions, and the quick start run twice.
Every command runs as a real subprocess."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

from e2ebackup.cli.main import build_parser
from repo_helpers import PASSWORD, cli, env, new_repo, open_repo

ROOT = Path(__file__).resolve().parents[2]
VAULT_EXTRA = "pip install 'e2ebackup[vault]'"


def _without(tmp: Path, modules: tuple[str, ...], *args: str) -> subprocess.CompletedProcess[str]:
    """``e2ebackup ARGS`` in a Python where ``modules`` cannot be imported, as if their extra
    were not installed (a None in sys.modules makes ``import`` raise ModuleNotFoundError)."""
    blocked = "".join(f"sys.modules[{m!r}] = None\n" for m in modules)
    code = f"import sys\n{blocked}from e2ebackup.cli import main\nsys.exit(main(sys.argv[1:]))"
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        env=env(tmp),
        stdin=subprocess.DEVNULL,
        check=False,
        timeout=600,
    )


def test_init_with_a_vault_but_no_httpx_names_the_extra_and_leaves_nothing(
    tmp_path: Path,
) -> None:
    repo = tmp_path / "repo"
    r = _without(tmp_path, ("httpx",), "init", "-r", str(repo), "--vault", "http://127.0.0.1:9")
    assert r.returncode == 2, r.stderr
    assert r.stderr.count("\n") == 1, r.stderr
    assert VAULT_EXTRA in r.stderr
    assert not repo.exists()


def test_vault_serve_without_starlette_names_the_extra(tmp_path: Path) -> None:
    r = _without(tmp_path, ("starlette",), "vault", "serve", "--data-dir", str(tmp_path / "v"))
    assert r.returncode == 2, r.stderr
    assert r.stderr.count("\n") == 1, r.stderr
    assert VAULT_EXTRA in r.stderr


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_qr_codes_of_secret_keys_are_0600(tmp_path: Path) -> None:
    old = os.umask(0o022)  # the usual umask (inherited): a plain new file would be 0644
    try:
        (tmp_path / "plain").write_bytes(b"data")
        r = cli(tmp_path, "init", "-r", str(tmp_path / "repo"), "--recovery-key", "--qr",
                str(tmp_path / "init.png"))  # fmt: skip
        assert r.returncode == 0, r.stderr
        qr, plain = str(tmp_path / "enc.svg"), str(tmp_path / "plain")
        r = cli(tmp_path, "encrypt", "--new-recovery-key", "--qr", qr, "--kdf", "scrypt", plain,
                plain + ".e2eb")  # fmt: skip
        assert r.returncode == 0, r.stderr
        r = cli(tmp_path, "keygen", "--qr", str(tmp_path / "keygen.png"))
        assert r.returncode == 0, r.stderr
    finally:
        os.umask(old)
    for name in ("init.png", "enc.svg", "keygen.png"):
        assert _mode(tmp_path / name) == 0o600, name
    assert (tmp_path / "init.png").read_bytes().startswith(b"\x89PNG")
    assert b"<svg" in (tmp_path / "enc.svg").read_bytes()


def test_a_missing_path_exits_3_and_saves_no_snapshot(tmp_path: Path) -> None:
    new_repo(tmp_path / "repo")
    (tmp_path / "here").write_text("x")
    r = cli(tmp_path, "backup", "-r", str(tmp_path / "repo"), str(tmp_path / "here"),
            str(tmp_path / "not-here"))  # fmt: skip
    assert r.returncode == 3
    assert "not-here" in r.stderr
    assert "no snapshot saved" in r.stderr
    assert list(open_repo(tmp_path / "repo").snapshots()) == []


def test_init_where_a_repository_is(tmp_path: Path) -> None:
    repo = str(tmp_path / "repo")
    assert cli(tmp_path, "init", "-r", repo).returncode == 0
    again = cli(tmp_path, "init", "-r", repo)  # the same password: done already
    assert again.returncode == 0, again.stderr
    assert "nothing changed" in again.stdout
    other = cli(tmp_path, "init", "-r", repo, E2EBACKUP_PASSWORD="another password")
    assert other.returncode == 1
    assert "already a repository" in other.stderr
    more = cli(tmp_path, "init", "-r", repo, "--recovery-key")  # asks for something new
    assert more.returncode == 1
    assert "nothing changed" in more.stderr
    listed = cli(tmp_path, "key", "list", "-r", repo, "--json")
    assert [s["kind"] for s in json.loads(listed.stdout)] == ["password"]


def test_ctrl_c_exits_130_with_one_line_and_saves_nothing(tmp_path: Path) -> None:
    new_repo(tmp_path / "repo")
    locks = tmp_path / "repo" / "locks"
    proc = subprocess.Popen(
        [sys.executable, "-m", "e2ebackup", "backup", "-r", str(tmp_path / "repo"), "--stdin"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=False,
        env=env(tmp_path, E2EBACKUP_PASSWORD=PASSWORD),
        # Ctrl-C reaches a command a shell runs in the foreground, where SIGINT is at its
        # default. Under a background job (pytest started with `&`) it is ignored, and a Python
        # started so keeps ignoring it: the child gets the default back.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    assert proc.stdin is not None
    proc.stdin.write(b"some data, and more to come")
    proc.stdin.flush()
    deadline = time.monotonic() + 300
    while not (locks.is_dir() and any(locks.iterdir())):  # the backup holds its lock
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 130, stderr
    assert stderr.decode().strip().splitlines() == ["e2ebackup: interrupted; no snapshot was saved"]
    assert list(open_repo(tmp_path / "repo").snapshots()) == []


def test_help_lists_exit_codes_and_environment(tmp_path: Path) -> None:
    r = cli(tmp_path, "--help")
    assert r.returncode == 0
    epilog = r.stdout.split("exit codes:", 1)[1]
    for code in ("0", "1", "2", "3", "130"):
        assert f"\n  {code} " in epilog
    for name in ("E2EBACKUP_PASSWORD", "E2EBACKUP_RECOVERY_KEY", "E2EBACKUP_REPOSITORY"):
        assert name in epilog


def _walk(parser: argparse.ArgumentParser, path: str) -> list[str]:
    missing = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for choice in action._choices_actions:  # one per subcommand (not per alias)
                if not choice.help:
                    missing.append(f"{path} {choice.dest}")
                missing += _walk(action.choices[choice.dest], f"{path} {choice.dest}")
        elif not action.help:
            missing.append(f"{path} {'/'.join(action.option_strings) or action.dest}")
    return missing


def test_every_subcommand_and_option_has_a_help_line() -> None:
    assert _walk(build_parser(), "e2ebackup") == []


def test_mistakes_get_a_pointed_answer(tmp_path: Path) -> None:
    r = cli(tmp_path, "bakcup")
    assert r.returncode == 2
    assert "did you mean 'backup'?" in r.stderr
    r = cli(tmp_path, "backup", "--no-such-option", "x")
    assert r.returncode == 2
    assert r.stderr.startswith("usage: e2ebackup backup ")
    assert "--no-such-option" in r.stderr
    r = cli(tmp_path, "key", "list", "--nope")
    assert r.stderr.startswith("usage: e2ebackup key list ")
    r = cli(tmp_path, "snapshots", "-r", str(tmp_path), "--password-file", "/nope")
    assert r.returncode == 3
    assert "password file" in r.stderr
    assert "/nope" in r.stderr


def test_a_held_lock_hints_lock_wait(tmp_path: Path) -> None:
    repo = new_repo(tmp_path / "repo")
    (tmp_path / "f").write_text("x")
    with repo.lock(exclusive=True):
        r = cli(tmp_path, "backup", "-r", str(tmp_path / "repo"), str(tmp_path / "f"),
                E2EBACKUP_PASSWORD=PASSWORD)  # fmt: skip
    assert r.returncode == 1
    assert "--lock-wait" in r.stderr


def test_one_file_is_one_file(tmp_path: Path) -> None:
    (tmp_path / "only").mkdir()
    (tmp_path / "only" / "f").write_text("x")
    repo = str(tmp_path / "repo")
    assert cli(tmp_path, "init", "-r", repo, "--kdf", "scrypt").returncode == 0
    r = cli(tmp_path, "backup", "-r", repo, str(tmp_path / "only" / "f"))
    assert r.returncode == 0, r.stderr
    assert ": 1 file (1 new" in r.stdout
    r = cli(tmp_path, "restore", "-r", repo, "latest", "--target", str(tmp_path / "out"))
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("restored 1 file, ")
    r = cli(tmp_path, "stats", "-r", repo)
    assert r.stdout.startswith("1 snapshot holds ")


def test_the_quick_start_runs_twice_and_leaves_only_ignored_files(tmp_path: Path) -> None:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    block = text.split("## Quick start", 1)[1].split("```sh\n", 1)[1].split("```", 1)[0]
    steps = block.strip().splitlines()[0].split(" && ")
    assert steps[0] == "python3 -m pip install ."  # the package is already installed here
    shutil.copytree(ROOT / "python", tmp_path / "python")
    environ = {k: v for k, v in os.environ.items() if not k.startswith("E2EBACKUP_")}
    environ["E2EBACKUP_STATE_DIR"] = str(tmp_path / "state")
    outputs = set()
    for _ in range(2):
        for step in steps[1:]:
            argv = shlex.split(step)
            if argv[0] == "export":
                name, value = argv[1].split("=", 1)
                environ[name] = value
                continue
            assert argv[:3] == ["python3", "-m", "e2ebackup"]
            r = subprocess.run([sys.executable, *argv[1:]], cwd=tmp_path, capture_output=True,
                               text=True, env=environ, stdin=subprocess.DEVNULL)  # fmt: skip
            assert r.returncode == 0, (step, r.stderr)
            outputs |= {p.name for p in tmp_path.iterdir()} - {"python", "state"}
    assert outputs == {"repo", "restored"}
    ignored = subprocess.run(
        ["git", "check-ignore", "--no-index", "repo/config", "restored/python/x.py"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert ignored.stdout.split() == ["repo/config", "restored/python/x.py"]


def test_json_output_of_init_says_whether_it_created(tmp_path: Path) -> None:
    repo = str(tmp_path / "repo")
    first = json.loads(cli(tmp_path, "init", "-r", repo, "--json").stdout)
    second = json.loads(cli(tmp_path, "init", "-r", repo, "--json").stdout)
    assert (first["created"], second["created"]) == (True, False)
    assert first["id"] == second["id"]
