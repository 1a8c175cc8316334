"""The Qt-free application layer every front-end calls (amore_gui.application), without a display:
opening and creating context directories, the workspace's reads, writes and commands, and the
live-update policy (database watching; Kafka with the real tansu broker, its backstop, a broker
outage) - on real SQLite databases filled by the real backend."""
import subprocess
import sys
import threading
import time

import pytest

from amore_gui.application import opening
from backend.store.writer import RunDB
from tests.conftest import PROPOSAL, amore_cmd, wait_for


# --- opening and creating ----------------------------------------------------------------------

def test_create_context_dir_keeps_a_context_file_without_database(tmp_path, data_root):
    d = tmp_path / "amore"
    made = opening.create_context_dir(d, PROPOSAL, "generic")
    assert not made.kept_context and made.context_file == d / "context.py"
    assert opening.has_database(d) and (d / "extracted_data").is_dir()
    assert "generic" in opening.templates()
    # a context.py copied in, no database yet: the database is made around it, the file kept
    d2 = tmp_path / "copied"
    d2.mkdir()
    (d2 / "context.py").write_text("# my variables\n")
    made = opening.create_context_dir(d2, PROPOSAL, "mid")
    assert made.kept_context and (d2 / "context.py").read_text() == "# my variables\n"
    assert RunDB(d2).proposal == PROPOSAL
    # both there: nothing is overwritten
    with pytest.raises(FileExistsError):
        opening.create_context_dir(d2, PROPOSAL, "mid")
    # an explicit context file never silently gives way to the one in the directory
    d3 = tmp_path / "explicit"
    d3.mkdir()
    (d3 / "context.py").write_text("# mine\n")
    with pytest.raises(FileExistsError):
        opening.create_context_dir(d3, PROPOSAL, context_file=d2 / "context.py")
    assert not opening.has_database(d3)
    target = opening.locate(str(d2))
    assert target.exists and target.context_dir == d2.resolve()
    with pytest.raises(opening.LocateError):
        opening.locate("99999")


def test_cli_init_shares_the_create_only_the_database_rule(tmp_path, data_root):
    d = tmp_path / "amore"
    d.mkdir()
    (d / "context.py").write_text("# kept\n")
    out = subprocess.run(amore_cmd("init", d, "--proposal", PROPOSAL), capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "kept the existing context.py" in out.stdout
    assert (d / "context.py").read_text() == "# kept\n" and opening.has_database(d)
