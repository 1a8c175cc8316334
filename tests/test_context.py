"""The context file API as users write it, evaluated by the real worker process on real runs."""
import textwrap

import numpy as np
import pytest

from backend.ctxrunner.context import ContextFile, ContextFileError
from backend.ctxrunner.results import h5_path, read_run_value
from backend.store.writer import RunDB

from tests.conftest import PROPOSAL, process

XGM = "SA2_XTD1_XGM/XGM/DOOCS"


@pytest.mark.parametrize("imp", [
    "from damnit_ctx import Variable, Cell",
    "from damnit.context import Variable, Cell",
    "from amore_mid_prototype.context import Variable, Cell",
    "from amore.context import Variable, Cell",
])
def test_compat_imports_run_unchanged(make_context_dir, write_run, imp):
    ctx = make_context_dir(textwrap.dedent(f"""
        import numpy as np
        {imp}

        @Variable(title="XGM/Flux", units="uJ", summary="mean")
        def flux(run):
            return run["{XGM}", "pulseEnergy.photonFlux"].xarray()

        @Variable(title="Trains")
        def n(run):
            return Cell(len(run.train_ids), bold=True)
    """))
    write_run(1, ntrains=30)
    out, values, err = process(ctx, 1)
    assert err is None and out.status == "done"
    assert values["n"].value == 30 and values["n"].attributes["bold"] is True
    assert 500 < values["flux"].value < 1200
    assert values["flux"].attributes["units"] == "uJ"
    # the whole per-train data is in the run's HDF5 file, with train IDs
    da = read_run_value(h5_path(ctx, PROPOSAL, 1), "flux")
    assert da.shape == (30,) and da.dims == ("trainId",)
    assert np.isclose(float(da.mean()), values["flux"].value, rtol=1e-5)
    assert da.coords["trainId"].values[0] > 1_000_000_000


def test_one_failing_variable_loses_nothing_else(make_context_dir, write_run):
    ctx = make_context_dir(textwrap.dedent("""
        from amore.context import Variable, Skip

        @Variable
        def good(run):
            return 42

        @Variable
        def bad(run):
            return 1 / 0

        @Variable
        def needs_bad(run, x: "var#bad"):
            return x

        @Variable
        def needs_needs_bad(run, x: "var#needs_bad"):
            return x

        @Variable
        def skipped(run):
            raise Skip("no camera in this run")

        @Variable
        def with_default(run, x: "var#bad" = -1):
            return x
    """))
    write_run(1)
    out, values, _ = process(ctx, 1)
    assert out.status == "done" and out.n_errors == 3
    assert values["good"].value == 42
    assert values["bad"].summary_type == "error"
    assert values["bad"].attributes["error_type"] == "ZeroDivisionError"
    assert values["bad"].attributes["line"] == 10  # "return 1 / 0"
    assert values["needs_needs_bad"].attributes["error"] == (
        "needs_needs_bad needs needs_bad needs bad, which failed with ZeroDivisionError: "
        "division by zero")
    assert values["skipped"].summary_type == "skipped"
    assert values["skipped"].attributes["reason"] == "no camera in this run"
    assert values["with_default"].value == -1


def test_inputs_meta_param_glob_and_unavailable_mymdc(make_context_dir, write_run, proposal_dir):
    ctx = make_context_dir(textwrap.dedent("""
        from damnit_ctx import Variable

        @Variable
        def run_no(run, n: "meta#run_number", p: "meta#proposal", path: "meta#proposal_path"):
            return f"{p}/{n}@{path}"

        @Variable
        def scaled(run, factor: "param#factor" = 2):
            return 10 * factor

        @Variable
        def part_a(run):
            return 1

        @Variable
        def part_b(run):
            return 2

        @Variable
        def parts(run, d: "var#part_*"):
            return sum(d.values())

        @Variable
        def sample_name(run, s: "mymdc#sample_name"):
            return s
    """))
    write_run(3)
    out, values, _ = process(ctx, 3, params={"factor": 5})
    assert values["run_no"].value == f"{PROPOSAL}/3@{proposal_dir}"
    assert values["scaled"].value == 50
    assert values["parts"].value == 3
    assert "not available" in values["sample_name"].attributes["error"]


def test_result_types_become_table_values(make_context_dir, write_run):
    ctx = make_context_dir(textwrap.dedent("""
        import numpy as np
        import xarray as xr
        from amore.context import Variable

        CAM = "MID_EXP_SAM/CAM/CAM1:daqOutput"

        @Variable
        def flag(run): return np.bool_(True)

        @Variable
        def cplx(run): return 1 + 2j

        @Variable
        def nan(run): return float("nan")

        @Variable
        def image(run): return run[CAM, "data.image.pixels"].ndarray().mean(axis=0)

        @Variable
        def trend(run): return np.arange(1000.0)

        @Variable
        def cube(run): return np.zeros((2, 3, 4))

        @Variable
        def ds(run): return xr.Dataset({"a": ("x", np.arange(3)), "b": ("x", np.ones(3))})

        @Variable
        def fig(run):
            import matplotlib.pyplot as plt
            f, ax = plt.subplots()
            ax.plot([1, 2, 3])
            return f

        @Variable
        def axes(run):
            import matplotlib.pyplot as plt
            f, ax = plt.subplots()
            ax.imshow([[1, 2], [3, 4]])
            return ax

        @Variable
        def unstorable(run): return object()
    """))
    write_run(1)
    out, v, _ = process(ctx, 1)
    assert v["flag"].summary_type == "bool" and v["flag"].value == 1
    assert v["cplx"].summary_type == "complex" and complex(v["cplx"].value) == 1 + 2j
    assert v["nan"].summary_type == "number" and v["nan"].value is None
    assert v["image"].summary_type == "thumbnail" and v["image"].value[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(v["image"].value) < 40_000
    assert v["fig"].summary_type == "thumbnail" and len(v["fig"].value) < 60_000
    assert v["axes"].summary_type == "thumbnail" and v["axes"].value[:4] == b"\x89PNG"
    pts = np.frombuffer(v["trend"].value, "<f4")
    assert pts.size == 100 and pts[0] < pts[-1]
    assert v["cube"].summary_type == "array" and "(2, 3, 4)" in v["cube"].value
    assert v["ds"].summary_type == "array"
    assert v["unstorable"].summary_type == "error"
    path = h5_path(ctx, PROPOSAL, 1)
    assert read_run_value(path, "trend").shape == (1000,)
    assert read_run_value(path, "image").shape == (64, 64)
    assert set(read_run_value(path, "ds")) == {"a", "b"}
    assert read_run_value(path, "fig")[:4] == b"\x89PNG"


@pytest.mark.parametrize("code, expected", [
    ("x = (\n", "context.py, line 2: SyntaxError"),
    ("import no_such_module_here\n", "context.py, line 2: ModuleNotFoundError: No module named 'no_such_module_here'"),
    ("@Variable\ndef a(run, b: 'var#b'): pass\n@Variable\ndef b(run, a: 'var#a'): pass\n",
     "dependency cycle: a -> b -> a"),
    ("@Variable\ndef a(run, b: 'var#nothere'): pass\n", "no variable 'nothere' is defined"),
    ("@Variable(data='proc')\ndef p(run): pass\n@Variable\ndef r(run, x: 'var#p'): pass\n",
     "raw-data variable 'r' depends on proc-data variable 'p'"),
])
def test_context_file_errors_are_specific(tmp_path, code, expected):
    f = tmp_path / "context.py"
    f.write_text("from amore.context import Variable\n" + code)
    with pytest.raises(ContextFileError) as e:
        ContextFile.from_path(f)
    assert expected in str(e.value)
    assert str(f) in str(e.value)


def test_variable_metadata_reaches_database(make_context_dir, write_run):
    ctx = make_context_dir(textwrap.dedent('''
        from amore.context import Variable

        @Variable(title="Camera/Spot", units="px", tags="camera", data="raw")
        def spot(run):
            """Spot size."""
            return 1.0

        @Variable(transient=True)
        def helper(run):
            return 2.0
    '''))
    write_run(1)
    out, values, _ = process(ctx, 1)
    (var,) = RunDB(ctx).get_variables()
    assert (var.name, var.title, var.units, var.tags, var.description) == (
        "spot", "Camera/Spot", "px", ["camera"], "Spot size.")
    assert "helper" not in values


def test_concurrent_writers_of_one_run_file_keep_each_others_values(tmp_path):
    """The backend and a reprocess writing the same run's HDF5 file at once lose nothing."""
    import threading

    from backend.ctxrunner.results import write_run_file

    path = tmp_path / "p1_r1.h5"
    barrier = threading.Barrier(8)

    def writer(i):
        barrier.wait()
        for k in range(5):
            assert write_run_file(path, {f"w{i}_{k}": (np.full(1000, i * 10 + k), None)}) == {}

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i in range(8):
        for k in range(5):
            assert read_run_value(path, f"w{i}_{k}")[0] == i * 10 + k


def test_unwritable_extracted_data_keeps_table_values_and_says_why(make_context_dir, write_run):
    """Like a full disk: the HDF5 write fails, the table values are still stored."""
    ctx = make_context_dir(template="generic")
    (ctx / "extracted_data").rmdir()
    (ctx / "extracted_data").write_text("not a directory")
    write_run(1, ntrains=20)
    out, values, _ = process(ctx, 1)
    assert out.status == "done"
    assert values["n_trains"].value == 20
    assert "could not write" in values["n_trains"].attributes["storage_error"]
    assert "could not write" in RunDB(ctx).get_run(PROPOSAL, 1)["status_message"]
