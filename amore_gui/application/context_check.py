"""Validating a context file before saving it, in a separate process (plain Python, no Qt).

User code never runs in the GUI process: the text is written to a temporary copy and loaded by
``python -c ...`` with :meth:`backend.ctxrunner.context.ContextFile.from_path` (which compiles it, runs it
and checks the dependencies). The context directory is put on ``sys.path`` as the backend
does; the names of its manual columns (inputs ``var#name`` may name them) are read from its
database (query :data:`backend.store.reader.MANUAL_COLUMN_NAMES_SQL`, passed to the checker).
The Python used is the configured ``processing.context_python`` (else this one), with AMORE's package directory on ``PYTHONPATH``.

:func:`check_command` gives the command (the GUI runs it with ``QProcess``);
:func:`parse_check_output` reads its answer; :func:`validate` does both synchronously.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from backend import PACKAGE_PARENT
from backend.contextdir import db_file
from backend.store.reader import MANUAL_COLUMN_NAMES_SQL

_SCRIPT = r"""
import json, sys
ctx_dir, path, db, manual_sql = sys.argv[1:5]
sys.path.insert(0, ctx_dir)
try:
    from backend.ctxrunner.context import ContextFile, ContextFileError
except Exception as e:
    print(json.dumps({"ok": False, "error": "cannot import AMORE's context API: %s" % e}))
    sys.exit(0)
manual = []
try:  # manual columns may be read as var#name: their names come from the database
    import os, sqlite3
    if os.path.isfile(db):
        con = sqlite3.connect("file:%s?mode=ro" % db, uri=True, timeout=5)
        try:
            manual = [r[0] for r in con.execute(manual_sql)]
        finally:
            con.close()
except Exception:
    manual = []
try:
    ctx = ContextFile.from_path(path, manual=manual)
except ContextFileError as e:
    print(json.dumps({"ok": False, "error": str(e)}))
except BaseException as e:
    print(json.dumps({"ok": False, "error": "%s: %s" % (type(e).__name__, e)}))
else:
    print(json.dumps({"ok": True, "variables": [
        {"name": n, "title": v.title, "data": v.data} for n, v in ctx.variables.items()]}))
"""

_LINE_RE = re.compile(r"line (\d+)")


@dataclass
class CheckResult:
    """``ok``; ``error`` text (with the real file name, not the temporary one); ``line``
    number of the error if known; ``variables`` (names) when ok."""

    ok: bool
    error: str = ""
    line: int | None = None
    variables: list[str] = field(default_factory=list)


def context_python(context_dir: str | Path) -> str:
    """The interpreter that evaluates context files for this directory."""
    try:
        from backend.config import load_config
        return load_config(context_dir)["processing"]["context_python"] or sys.executable
    except Exception:
        return sys.executable


def write_temp_copy(code: str) -> Path:
    """Write ``code`` to a new temporary ``.py`` file; the caller deletes it."""
    fd, tmp = tempfile.mkstemp(prefix="amore-context-check-", suffix=".py")
    with os.fdopen(fd, "w") as f:
        f.write(code)
    return Path(tmp)


def check_command(context_dir: str | Path, temp_path: str | Path) -> tuple[list[str], dict]:
    """``(argv, env)`` of the process that validates ``temp_path``."""
    env = dict(os.environ)
    env["PYTHONPATH"] = PACKAGE_PARENT + (os.pathsep + env["PYTHONPATH"]
                                          if env.get("PYTHONPATH") else "")
    env["MPLBACKEND"] = "Agg"
    return [context_python(context_dir), "-c", _SCRIPT, str(context_dir), str(temp_path),
            str(db_file(context_dir)), MANUAL_COLUMN_NAMES_SQL], env


def parse_check_output(stdout: str, stderr: str, temp_path: str | Path,
                       shown_name: str = "context.py") -> CheckResult:
    """Interpret the checker's output (last JSON line of stdout)."""
    for line in reversed(stdout.strip().splitlines()):
        try:
            ans = json.loads(line)
        except ValueError:
            continue
        if ans.get("ok"):
            return CheckResult(True, variables=[v["name"] for v in ans.get("variables", [])])
        err = str(ans.get("error", "unknown error")).replace(str(temp_path), shown_name)
        m = _LINE_RE.search(err)
        return CheckResult(False, err, int(m.group(1)) if m else None)
    tail = (stderr or stdout).strip()[-2000:].replace(str(temp_path), shown_name)
    m = _LINE_RE.search(tail)
    return CheckResult(False, tail or "the checker gave no answer", int(m.group(1)) if m else None)


def validate(code: str, context_dir: str | Path, timeout: float = 60.0) -> CheckResult:
    """Validate context-file text synchronously (for tests and scripts)."""
    tmp = write_temp_copy(code)
    try:
        argv, env = check_command(context_dir, tmp)
        try:
            p = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout,
                               cwd=str(context_dir))
        except subprocess.TimeoutExpired:
            return CheckResult(False, f"loading the context file took more than {timeout:.0f} s")
        return parse_check_output(p.stdout, p.stderr, tmp)
    finally:
        tmp.unlink(missing_ok=True)
