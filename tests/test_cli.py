"""`amore-proto` commands as a user runs them."""
import re
import subprocess


from backend.store.writer import RunDB

from tests.conftest import PROPOSAL, REPO, amore_cmd


def run(*args, timeout=120):
    return subprocess.run(amore_cmd(*args), capture_output=True, text=True, timeout=timeout)


def test_init_creates_context_dir_and_refuses_to_overwrite(tmp_path, data_root):
    d = tmp_path / "amore"
    out = run("init", d, "--proposal", 1234, "--template", "mid")
    assert out.returncode == 0, out.stderr
    assert (d / "runs.sqlite").is_file() and (d / "extracted_data").is_dir()
    assert "XGM" in (d / "context.py").read_text()
    (d / "context.py").write_text("# my edits\n")
    out = run("init", d, "--proposal", 1234)
    assert out.returncode == 1 and "already exists" in out.stderr
    assert (d / "context.py").read_text() == "# my edits\n"
    (d / "context.py").unlink()
    out = run("init", d, "--proposal", 999)
    assert out.returncode == 1 and "belongs to proposal 1234" in out.stderr
    out = run("init", tmp_path / "x", "--proposal", 1, "--template", "nope")
    assert out.returncode == 1 and "available: demo, generic, mid, spb" in out.stderr


def test_proposal_show_and_set(tmp_path, data_root):
    d = tmp_path / "amore"
    run("init", d, "--proposal", 1234)
    assert run("proposal", "--dir", d).stdout.strip() == "1234"
    out = run("proposal", "4321", "--dir", d)
    assert "Proposal set to 4321 (was 1234)" in out.stdout
    assert RunDB(d).proposal == 4321


def test_reprocess_all_with_match_and_missing_run(make_context_dir, write_run):
    ctx = make_context_dir(template="mid")
    for r in (1, 2, 3):
        write_run(r, ntrains=20)
    out = run("reprocess", "all", "--dir", ctx, "--match", "motor")
    assert out.returncode == 0, out.stderr
    assert "Reprocessed 3/3 runs" in out.stdout
    values = RunDB(ctx).get_values(PROPOSAL, 2)
    assert set(values) == {"motor_start", "motor_range"}
    out = run("reprocess", "7", "--dir", ctx)
    assert out.returncode == 1 and "run 7: failed: Run 7 of proposal 2832 not found" in out.stderr
    assert RunDB(ctx).get_run(PROPOSAL, 7)["status"] == "failed"


def test_show_prints_the_run_table(make_context_dir, write_run):
    ctx = make_context_dir(template="mid")
    write_run(1, ntrains=20)
    run("reprocess", "1", "--dir", ctx)
    out = subprocess.run(amore_cmd("show", ctx), capture_output=True, text=True,
                         env={**__import__("os").environ, "COLUMNS": "250"})
    assert out.returncode == 0
    row = next(l for l in out.stdout.splitlines() if re.match(r"^│\s+1 │", l))
    assert "done" in row and " 20 " in row


def test_demo_shows_at_least_five_runs(tmp_path):
    env = {**__import__("os").environ, "COLUMNS": "250", "AMORE_BROKER": "none",
           "QT_QPA_PLATFORM": "offscreen"}
    out = subprocess.run(amore_cmd("demo", tmp_path / "demo", "--runs", 5, "--interval", 0.5,
                                   "--no-gui"), capture_output=True, text=True, timeout=180,
                         env=env)
    assert out.returncode == 0, out.stdout + out.stderr
    final = out.stdout[out.stdout.rfind("Proposal 9999"):]
    rows = [l for l in final.splitlines() if re.match(r"^│\s+\d+ │", l)]
    assert len(rows) == 5, out.stdout
    assert all(" done " in r for r in rows), final
    ctx = tmp_path / "demo/data/MID/202601/p009999/usr/Shared/amore-proto"
    db = RunDB(ctx)
    assert len(db.runs()) == 5
    values = db.get_values(9999, 3)
    assert all(v.summary_type != "error" for v in values.values())
    assert values["agipd_frames"].value == 4  # proc variable: computed once corrected data came
    assert values["cam_mean"].summary_type == "thumbnail"


def test_dependencies_listed_alike_in_pyproject_and_environment_yml():
    import yaml

    from backend.config import tomllib

    def norm(spec):
        name = re.split(r"[<>=;!~ \[]", spec.strip(), maxsplit=1)[0].lower()
        return {"pyqt": "pyqt5", "python-confluent-kafka": "confluent-kafka"}.get(name, name)

    proj = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    want = {norm(d) for d in proj["dependencies"]}
    want |= {norm(d) for d in proj["optional-dependencies"]["test"]}
    env = yaml.safe_load((REPO / "environment.yml").read_text())
    have = set()
    for dep in env["dependencies"]:
        if isinstance(dep, dict):
            have |= {norm(d) for d in dep["pip"]}
        else:
            have.add(norm(dep))
    have -= {"python", "pip", "tmux"}
    assert want == have


def test_init_in_a_group_shared_directory_makes_group_writable_files(tmp_path, data_root):
    import os
    import stat

    shared = tmp_path / "usr" / "Shared"
    shared.mkdir(parents=True)
    shared.chmod(0o2770)  # group-writable, setgid: a proposal's shared folder
    d = shared / "amore"
    d.mkdir()
    d.chmod(0o2770)
    old = os.umask(0o022)
    try:
        out = run("init", d, "--proposal", 1234)
    finally:
        os.umask(old)
    assert out.returncode == 0, out.stderr
    for p in (d / "runs.sqlite", d / "context.py", d / "extracted_data"):
        mode = p.stat().st_mode
        assert mode & stat.S_IWGRP, p
        assert not mode & stat.S_IWOTH, p
