"""The layer rules of pyproject.toml ([tool.importlinter]) hold: the service never imports the GUI,
Qt stays under amore_gui._qt, code that runs context files imports no database, Kafka or Qt, and
no sub-packages import each other in a cycle."""
import shutil
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO


def test_import_linter_contracts_hold():
    exe = shutil.which("lint-imports", path=str(Path(sys.executable).parent)) or shutil.which("lint-imports")
    assert exe, "lint-imports (import-linter, a test extra) is not installed"
    r = subprocess.run([exe, "--no-cache"], cwd=REPO, capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    assert "0 broken" in r.stdout


def test_context_api_imports_without_a_worker():
    """``import amore.context`` works in a plain Python (a notebook, an IDE, a linter), without
    SQLAlchemy, Kafka or Qt being imported."""
    code = ("import sys, amore.context as c; "
            "names = ('Variable', 'Cell', 'Skip', 'Group', 'RunData', 'Pipeline'); "
            "missing = [n for n in names if n not in c.__all__ or not hasattr(c, n)]; "
            "assert not missing, missing; "
            "assert c.RunData.PROC == 'proc' and callable(c.Pipeline.from_path); "
            "bad = [m for m in ('sqlalchemy', 'confluent_kafka', 'qtpy', 'PyQt5', 'PyQt6') if m in sys.modules]; "
            "assert not bad, bad")
    r = subprocess.run([sys.executable, "-c", code], cwd="/", capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
