"""`pip install .` (not editable) gives a pushbot that migrates and runs from any directory."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def test_a_built_wheel_migrates_and_runs_from_an_empty_directory(tmp_path: Path) -> None:
    wheels = tmp_path / "wheels"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--wheel-dir",
            str(wheels),
            str(REPO_ROOT),
        ],
        check=True,
        cwd=tmp_path,
    )
    (wheel,) = wheels.glob("pushbot-*.whl")
    # A fresh environment whose only pushbot is the wheel; its dependencies come from this
    # venv's site-packages through a .pth file (no download, and not this checkout's
    # editable install: .pth files on a path added that way are not processed).
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=False)
    python = env_dir / "bin" / "python"
    site = Path(
        subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
    )
    (site / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--target",
            str(site),
            str(wheel),
        ],
        check=True,
    )
    empty = tmp_path / "anywhere"
    empty.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "DATABASE"))}
    where = subprocess.run(
        [str(python), "-c", "import pushbot, pushbot.migrations; print(pushbot.__file__)"],
        check=True,
        capture_output=True,
        text=True,
        cwd=empty,
        env=env,
    ).stdout
    assert where.startswith(str(site))  # the wheel's copy, not the checkout

    demo = subprocess.run(
        [str(python), "-m", "pushbot", "demo", "--fast", "--users", "40"],
        capture_output=True,
        text=True,
        cwd=empty,
        env=env,
        timeout=300,
    )
    assert demo.returncode == 0, demo.stdout[-2000:] + demo.stderr[-2000:]
    assert "Done: that was the real bot" in demo.stdout

    # `pushbot run`'s first step, against a database file in that directory.
    migrate = "from pushbot.db.session import upgrade_database as up; up('sqlite:///here.db')"
    subprocess.run([str(python), "-c", migrate], check=True, cwd=empty, env=env)
    with sqlite3.connect(empty / "here.db") as db:
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master")}
    assert {"alembic_version", "chats", "push_messages"} <= tables
