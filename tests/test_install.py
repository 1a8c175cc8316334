"""``pip install .`` gives users the public packages, the migrations and the templates (not only
an editable checkout): build the wheel, install it into an empty folder, import from there."""
import subprocess
import sys

from tests.conftest import REPO


def test_wheel_contains_the_public_api_migrations_and_templates(tmp_path):
    wheels = tmp_path / "wheels"
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps",
                        "-w", str(wheels), str(REPO)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    (wheel,) = wheels.glob("amore-*.whl")
    target = tmp_path / "site"
    r = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target",
                        str(target), str(wheel)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    code = (
        "import amore, amore.context, amore.cli, backend, context_templates\n"
        f"assert amore.__file__.startswith({str(target)!r}), amore.__file__\n"
        "from backend.store.init import init_context_dir\n"
        "from backend.store.writer import RunDB\n"
        f"init_context_dir({str(tmp_path / 'ctx')!r}, 2832, 'generic')\n"
        f"print(RunDB({str(tmp_path / 'ctx')!r}).proposal)\n"
    )
    env = {"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"}
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                       env=env, timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.strip() == "2832"
    assert (target / "backend" / "ctxrunner" / "README.md").is_file()
