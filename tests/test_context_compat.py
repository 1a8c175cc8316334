"""Context files written for DAMNIT 0.4.0 run unchanged: @Group classes (self# inputs, nested
groups, merged titles and tags, ``<group>.<var>`` names) through the real worker into the
database, the run's HDF5 file and the GUI's table; DAMNIT's own shipped templates (read out of
its wheel, downloaded at test time) on a mock run, with the real ``damnit`` and ``euxfel-extra``
packages installed; and ``Pipeline`` evaluating a context file from a notebook."""
import importlib.util
import os
import re
import subprocess
import sys
import tempfile
import textwrap
import zipfile
from pathlib import Path

import numpy as np
import pytest

from backend.ctxrunner.results import h5_path, read_run_value
from backend.store.writer import RunDB
from tests.conftest import PROPOSAL, process

DAMNIT_VERSION = "0.4.0"

GROUP_CONTEXT = '''
from damnit_ctx import Variable, Group, Cell

XGM = "SA2_XTD1_XGM/XGM/DOOCS"

@Group(tags="xgm")
class XGMGroup:
    source: str
    pulses: int = 4

    @Variable(title="Pulse energy", units="uJ", summary="mean")
    def energy(self, run):
        return run[self.source + ":output", "data.intensityTD"].xarray()[:, :self.pulses].mean("dim_0")

    @Variable(title="Relative")
    def relative(self, run, e: "self#energy"):
        return float(e.std() / e.mean())

@Group
class Beamline:
    xgm: XGMGroup
    spare: XGMGroup = None              # an optional nested group, not set here

    @Variable(title="Energy x pulses", tags=["beam"])
    def total(self, run, e: "self#xgm.energy", n: "meta#run_number"):
        return Cell(float(e.mean()) * self.xgm.pulses, bold=True)

    @Variable(title="Spare energy")
    def spare_energy(self, run, e: "self#spare.energy" = -1.0):
        return e

    @Variable(title="Needs spare")
    def needs_spare(self, run, e: "self#spare.energy"):
        return e

beamline = Beamline(xgm=XGMGroup(source=XGM), title="SASE2", tags="sase2")

@Variable(title="Doubled")
def doubled(run, t: "var#beamline.total"):
    return 2 * t
'''


def test_group_context_runs_unchanged_through_the_worker(make_context_dir, write_run):
    ctx = make_context_dir(GROUP_CONTEXT)
    info = write_run(1, ntrains=40)
    out, values, err = process(ctx, 1)
    assert err is None and out.status == "done"

    # names <group>.<var>, nested groups <group>.<sub>.<var>; the values computed on the run
    energy = values["beamline.xgm.energy"]
    assert abs(energy.value - info["xgm_flux_mean"]) < 0.3 * info["xgm_flux_mean"]
    assert energy.attributes["units"] == "uJ"
    assert 0 < values["beamline.xgm.relative"].value < 0.5
    assert values["beamline.total"].value == pytest.approx(4 * energy.value, rel=1e-5)
    assert values["beamline.total"].attributes["bold"] is True
    assert values["doubled"].value == pytest.approx(2 * values["beamline.total"].value)
    # an unset nested group: the input's default is used, or the variable is skipped, saying why
    assert values["beamline.spare_energy"].value == -1.0
    assert values["beamline.needs_spare"].summary_type == "skipped"
    assert values["beamline.needs_spare"].attributes["reason"] == (
        "beamline.needs_spare needs beamline.spare.energy, which was skipped "
        "(beamline.spare is None)")
    assert "beamline.spare.energy" not in values  # the stand-in input is not a column

    # titles and tags merged from the groups into the variables, as the database has them
    db = RunDB(ctx)
    meta = {v.name: v for v in db.get_variables()}
    assert meta["beamline.total"].title == "SASE2/Energy x pulses"
    assert meta["beamline.total"].tags == ["beam", "sase2"]
    assert meta["beamline.xgm.energy"].title == "beamline/xgm/Pulse energy"
    assert meta["beamline.xgm.energy"].tags == ["xgm"]
    assert meta["beamline.xgm.energy"].units == "uJ"
    assert set(meta) == {"beamline.xgm.energy", "beamline.xgm.relative", "beamline.total",
                         "beamline.spare_energy", "beamline.needs_spare", "doubled"}
    db.close()

    # the whole per-train data is in the run's HDF5 file under the dotted name
    da = read_run_value(h5_path(ctx, PROPOSAL, 1), "beamline.xgm.energy")
    assert da.shape == (40,) and da.dims == ("trainId",)
    assert float(da.mean()) == pytest.approx(energy.value, rel=1e-5)

    # and the GUI's table shows the columns by name, with the group on the header's first line
    from amore_gui.application import dbread
    table = dbread.load_table(ctx).data
    col = next(c for c in table.columns if c.key == "beamline.total")
    assert col.header == "SASE2\nEnergy x pulses"
    row = table.row_of[(PROPOSAL, 1)]
    assert table.num[row, table.var_of("beamline.xgm.energy")] == pytest.approx(energy.value)


@pytest.mark.parametrize("code, expected", [
    ("@Group\nclass G:\n    name: str\n", "reserved field(s) name"),
    ("@Group\nclass G:\n    @Variable\n    def a(self, run, x: 'self#nothere'): pass\ng = G()\n",
     "Group 'g' has no variable 'nothere'"),
    ("@Group\nclass G:\n    @Variable\n    def a(self, run): pass\n"
     "g1 = G(name='g')\ng2 = G(name='g')\n", "group name 'g' is used by several"),
    ("@Variable\ndef x(run, y: 'self#a'): pass\n", "only work in variables of a @Group class"),
    ("@Group\nclass G:\n    @Variable\n    def a(self, run): pass\n"
     "g = G()\n@Variable(title='t')\ndef _x(run): pass\n_x.name = 'g.a'\n",
     "duplicate variable name 'g.a'"),
])
def test_group_mistakes_are_clear_context_errors(tmp_path, code, expected):
    from backend.ctxrunner.context import ContextFile, ContextFileError
    f = tmp_path / "context.py"
    f.write_text("from damnit_ctx import Variable, Group\n" + code)
    with pytest.raises(ContextFileError) as e:
        ContextFile.from_path(f)
    assert expected in str(e.value)


def test_pipeline_evaluates_a_context_file_from_a_notebook(tmp_path, write_run, proposal_dir):
    """Pipeline in this process: by run number, on a DataCollection, a selection, params."""
    import extra_data

    from amore.context import Pipeline, VariableError
    f = tmp_path / "context.py"
    f.write_text(GROUP_CONTEXT + textwrap.dedent('''
        @Variable
        def where(run, p: "meta#proposal_path", n: "meta#run_number"):
            return str(p / "raw" / f"r{n:04d}")

        @Variable
        def scaled(run, factor: "param#factor"):
            return 10 * factor

        @Variable
        def broken(run):
            return {}["nothing"]
    '''))
    write_run(5, ntrains=30)
    pipe = Pipeline.from_path(f)
    assert "beamline.xgm.energy" in pipe.variables

    res = pipe.evaluate(5, proposal=PROPOSAL, params={"factor": 3})
    assert res["beamline.xgm.energy"].shape == (30,)       # the whole value, not the summary
    assert res.summary("beamline.xgm.energy") == pytest.approx(float(res["beamline.xgm.energy"].mean()))
    assert res["beamline.total"] == pytest.approx(4 * float(res["beamline.xgm.energy"].mean()))
    assert res.cells["beamline.total"].bold is True
    assert res["where"] == str(proposal_dir / "raw" / "r0005")
    assert res["scaled"] == 30
    assert "KeyError" in str(res.errors["broken"])
    with pytest.raises(VariableError, match="KeyError: 'nothing'"):
        res["broken"]
    with pytest.raises(VariableError, match="skipped"):
        res["beamline.needs_spare"]
    with pytest.raises(KeyError, match="no_such_variable"):
        res["no_such_variable"]
    assert pipe.results is res

    # any DataCollection (here 10 trains), only the variables asked for and their inputs
    run = extra_data.open_run(PROPOSAL, 5).select_trains(np.s_[:10])
    res = pipe.select(variables=["doubled"]).evaluate(run)
    assert set(res) == {"beamline.xgm.energy", "beamline.total", "doubled"}
    assert res["beamline.xgm.energy"].shape == (10,)
    assert (res.proposal, res.run_number) == (PROPOSAL, 5)

    # DAMNIT's spelling, with variables and groups defined in the notebook itself
    from amore.context import Group, Variable

    @Group
    class Counter:
        factor: int = 1

        @Variable(title="Trains")
        def trains(self, run):
            return len(run.train_ids) * self.factor

        @Variable(title="Twice")
        def twice(self, run, n: "self#trains"):
            return 2 * n

    @Variable
    def pulses_seen(run, c: "var#double.twice"):
        return c + 1

    res = Pipeline(PROPOSAL, 5).add({"double": Counter(factor=2)}, pulses_seen).execute()
    assert (res["double.trains"], res["double.twice"], res["pulses_seen"]) == (60, 120, 121)
    assert res.cells["double.trains"].data == 60

    with pytest.raises(ValueError, match="proposal"):
        Pipeline.from_path(f).evaluate(5)
    with pytest.raises(FileNotFoundError):
        pipe.evaluate(99, proposal=PROPOSAL)


# -- DAMNIT 0.4.0's own templates -----------------------------------------------------------------

def _cache_dir() -> Path:
    base = os.environ.get("AMORE_TEST_CACHE") or os.path.join(
        tempfile.gettempdir(), f"amore-test-cache-{os.getuid()}")
    return Path(base) / f"damnit-{DAMNIT_VERSION}"


#: euxfel-extra (which DAMNIT's templates import, and which pulls in the real damnit package)
#: is released for Python >= 3.11 only; the test extras install it there (CI runs 3.11).
needs_euxfel_extra = pytest.mark.skipif(sys.version_info < (3, 11),
                                        reason="euxfel-extra needs Python >= 3.11")


@pytest.fixture(scope="session")
def damnit_wheel() -> Path:
    """DAMNIT's wheel from PyPI (downloaded once, kept in a cache directory keyed by version)."""
    cache = _cache_dir()
    wheels = sorted(cache.glob(f"damnit-{DAMNIT_VERSION}-*.whl"))
    if not wheels:
        cache.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=cache) as td:
            r = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps",
                                "--disable-pip-version-check", f"damnit=={DAMNIT_VERSION}",
                                "-d", td], capture_output=True, text=True, timeout=300)
            assert r.returncode == 0, f"pip download damnit=={DAMNIT_VERSION} failed:\n{r.stderr[-2000:]}"
            (whl,) = Path(td).glob("*.whl")
            os.replace(whl, cache / whl.name)
        wheels = sorted(cache.glob(f"damnit-{DAMNIT_VERSION}-*.whl"))
    return wheels[-1]


def damnit_templates(wheel: Path) -> dict[str, str]:
    with zipfile.ZipFile(wheel) as z:
        return {Path(n).stem: z.read(n).decode()
                for n in z.namelist() if re.fullmatch(r"damnit/ctx-templates/[^/]+\.py", n)}


@needs_euxfel_extra
def test_real_damnit_and_extra_are_installed_beside_amore():
    """The templates need euxfel-extra, which depends on the real damnit package: both are in
    the test extras, so that the next test checks AMORE's API wins inside context files."""
    assert importlib.util.find_spec("extra.components") is not None, "pip install euxfel-extra"
    spec = importlib.util.find_spec("damnit")
    assert spec is not None and "site-packages" in spec.origin, spec


@needs_euxfel_extra
def test_damnit_templates_run_unchanged_on_a_mock_run(damnit_wheel, make_context_dir, write_run):
    templates = damnit_templates(damnit_wheel)
    assert {"SA1_base", "SA2_base", "SA3_base"} <= set(templates), sorted(templates)
    # a SASE2 run with its timeserver (for XrayPulses) and proc data (for proc_size)
    info = write_run(1, ntrains=60, agipd_modules=1, timeserver=True, pulses=4)
    for name, code in sorted(templates.items()):
        ctx = make_context_dir(code, name=name)
        out, values, err = process(ctx, 1)
        assert err is None, f"{name}: {err}"
        assert out.status == "done", f"{name}: {out}"
        assert set(values) == {"n_trains", "run_length", "raw_size", "proc_size",
                               "xgm_intensity", "pulses"}, name
        for var, v in values.items():  # every variable: a value, or an error saying what failed
            if v.summary_type == "error":
                assert v.attributes["error_type"] and len(v.attributes["error"]) > 10, (name, var, v)
            else:
                assert v.summary_type != "skipped" and v.value is not None, (name, var, v)
        # what the mock run has data for gives values
        assert values["n_trains"].value == 60, name
        assert values["run_length"].value == "0:00:05", name   # 60 trains at 10 Hz
        raw_bytes = sum(f.stat().st_size for f in info["raw_dir"].rglob("*"))
        assert values["raw_size"].value == pytest.approx(raw_bytes / 1e12), name
        proc_bytes = sum(f.stat().st_size for f in info["proc_dir"].rglob("*"))
        assert values["proc_size"].value == pytest.approx(proc_bytes / 1e12), name
        assert values["pulses"].value == 4, name   # from the timeserver's bunch pattern
        xgm = values["xgm_intensity"]
        if name == "SA2_base":  # the mock run is a SASE2 (MID) run: it has the SA2 XGM
            assert xgm.summary_type == "number"
            assert abs(xgm.value - info["xgm_flux_mean"]) < 0.3 * info["xgm_flux_mean"]
            assert xgm.attributes["units"] == "μJ"  # from the DataArray's attrs
        else:  # no SA1/SA3 XGM in a SASE2 run: an error naming what is missing
            assert xgm.summary_type == "error", (name, xgm)
            assert "Couldn't identify an XGM from 'sa" in xgm.attributes["error"], (name, xgm)


@needs_euxfel_extra
def test_amore_api_wins_over_the_installed_damnit_inside_context_files(make_context_dir, write_run):
    """With the real damnit package installed (and imported by the context file via
    euxfel-extra, before or after), damnit_ctx and damnit.context are AMORE's."""
    ctx = make_context_dir(textwrap.dedent('''
        import extra.damnit                      # imports the real damnit package
        from damnit import Damnit                # whose read API still works
        import damnit.context
        from damnit.context import Variable
        import damnit_ctx
        from extra.components import XGM

        @Variable(title="API")
        def api(run):
            return " ".join([Variable.__module__, damnit_ctx.Cell.__module__,
                             damnit.context.Group.__module__, Damnit.__module__])

        @Variable(title="Late import")
        def late(run):
            from damnit_ctx import Skip             # inside a function, at run time
            return Skip.__module__
    '''))
    write_run(1, ntrains=10)
    out, values, err = process(ctx, 1)
    assert err is None and out.status == "done"
    assert values["api"].value == ("backend.ctxrunner.context backend.ctxrunner.context "
                                   "backend.ctxrunner.context damnit.api")
    assert values["late"].value == "backend.ctxrunner.context"


def test_pipeline_in_a_notebook_leaves_the_real_damnit_alone(tmp_path):
    """A notebook using the real DAMNIT and AMORE's Pipeline keeps DAMNIT's damnit.context."""
    f = tmp_path / "context.py"
    f.write_text("from damnit_ctx import Variable\nimport damnit.context as dc\n"
                 "@Variable\ndef which(run):\n    return dc.Variable.__module__\n")
    code = textwrap.dedent(f'''
        import sys
        import damnit.context as real
        from amore.context import Pipeline
        pipe = Pipeline.from_path({str(f)!r})
        print(pipe.evaluate(object(), proposal=1)["which"])
        import damnit.context, damnit_ctx
        assert sys.modules["damnit.context"] is real and damnit.context is real
        assert damnit_ctx.Variable is real.Variable
        print("kept")
    ''')
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["backend.ctxrunner.context", "kept"]
