"""Plotly figures returned by a variable: stored as Plotly's JSON in the run's HDF5 file (no
pickle), a static thumbnail in the table (drawn without a browser), read back through amore.api
as a ``plotly.graph_objects.Figure``, and the pieces the inspection window needs."""
import io
import json
import textwrap

import h5py
import numpy as np
import pytest
from PIL import Image

from tests.conftest import PROPOSAL
from tests.conftest import process

PLOTLY_CONTEXT = textwrap.dedent("""
    import numpy as np
    import plotly.express as px
    import plotly.graph_objects as go
    from amore.context import Variable

    @Variable(title="Trend")
    def trend(run):
        x = np.arange(50)
        return px.line(x=x, y=np.sin(x / 5.0), title="A sine")

    @Variable(title="Map")
    def heat(run):
        return go.Figure(go.Heatmap(z=np.arange(64.0).reshape(8, 8)))
""")


def _png(data: bytes) -> Image.Image:
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    return Image.open(io.BytesIO(data))


def colours(img: Image.Image) -> int:
    """How many different colours a picture has (a blank canvas has one or two)."""
    return len(np.unique(np.asarray(img.convert("RGB")).reshape(-1, 3), axis=0))


def test_plotly_figures_are_stored_as_json_shown_as_thumbnails_and_read_back(
        make_context_dir, write_run):
    import amore.api
    import plotly.express as px
    from amore_gui.application.figures import read_figure
    from backend.ctxrunner.results import h5_path
    ctx = make_context_dir(PLOTLY_CONTEXT)
    write_run(1)
    out, values, err = process(ctx, 1)
    assert err is None and out.status == "done"
    # the table: a PNG thumbnail, at most 300 px a side
    for name in ("trend", "heat"):
        assert values[name].summary_type == "thumbnail"
        img = _png(values[name].value)
        assert max(img.size) <= 300 and colours(img) > 5
    # the run file: Plotly's JSON, nothing pickled
    with h5py.File(h5_path(ctx, PROPOSAL, 1), "r") as f:
        grp = f["trend"]
        assert grp.attrs["amore_type"] == "plotly"
        stored = json.loads(grp["data"][()].tobytes().decode("utf-8"))
    x = np.arange(50)
    want = px.line(x=x, y=np.sin(x / 5.0), title="A sine")
    assert stored["layout"]["title"]["text"] == "A sine"
    # amore.api: a plotly Figure, the same figure the variable returned
    db = amore.api.open(ctx)
    fig = db[1, "trend"].read()
    assert type(fig).__module__.startswith("plotly") and type(fig).__name__ == "Figure"
    assert json.loads(fig.to_json())["data"] == json.loads(want.to_json())["data"]
    assert db[1, "trend"].summary() == values["trend"].value
    # the inspection window's pieces: the JSON (interactive) and a larger static picture
    view = read_figure(ctx, PROPOSAL, 1, "trend")
    assert view.kind == "plotly" and json.loads(view.json)["layout"]["title"]["text"] == "A sine"
    assert max(_png(view.png).size) == pytest.approx(800, abs=2)


@pytest.mark.parametrize("trace", [
    {"type": "scatter", "x": {"dtype": "i1", "bdata": "AQID"}, "y": [3, 1, 2], "mode": "markers"},
    {"type": "bar", "x": ["a", "b"], "y": [1, 4]},
    {"type": "histogram", "x": list(range(100))},
    {"type": "heatmap", "z": {"dtype": "f8", "shape": "2, 2",
                              "bdata": "AAAAAAAAAAAAAAAAAADwPwAAAAAAAABAAAAAAAAACEA="}},
    {"type": "scatter3d", "x": [1], "y": [2], "z": [3]},
])
def test_static_rendering_draws_common_traces_without_a_browser(trace):
    from backend.ctxrunner.figures import decode_array, render_png
    img = _png(render_png({"data": [trace], "layout": {"title": {"text": "T"}}}, px=300))
    assert max(img.size) == pytest.approx(300, abs=2)
    assert colours(img) > 3      # more than a blank canvas
    if trace["type"] == "heatmap":
        assert decode_array(trace["z"]).tolist() == [[0.0, 1.0], [2.0, 3.0]]


def test_front_ends_show_a_plotly_figure(qtbot, make_context_dir, write_run, tmp_path, monkeypatch):
    """The Qt inspection window draws a Plotly cell statically (it has no web view); the
    browser gets the figure's own JSON to draw it interactively."""
    monkeypatch.setenv("QT_QPA_PLATFORM", "offscreen")
    from amore_gui._qt.mainwindow import MainWindow
    from amore_gui.application.settings import Settings
    from amore_gui.application.values import describe_value, read_run_value
    ctx = make_context_dir(PLOTLY_CONTEXT)
    write_run(1)
    out, values, err = process(ctx, 1)
    assert err is None and out.status == "done"
    w = MainWindow(ctx, settings=Settings(tmp_path / "gui.json"))
    qtbot.addWidget(w)
    w.show()
    qtbot.waitUntil(lambda: w.is_fully_loaded, timeout=15000)
    m = w.model
    iw = w.inspect(m.index(m.view_row_of(PROPOSAL, 1), m.column_of("trend")))
    qtbot.waitUntil(lambda: iw.kind is not None, timeout=15000)
    assert iw.kind == "plotly", iw.info.text()
    assert "Plotly figure" in iw.info.text()
    # the browser's description: the figure itself
    d = describe_value(read_run_value(ctx, PROPOSAL, 1, "trend"), "Trend")
    assert d["kind"] == "plotly" and d["figure"]["layout"]["title"]["text"] == "A sine"
    assert len(d["figure"]["data"][0]["y"]) == 50 or "bdata" in str(d["figure"]["data"][0]["y"])
    iw.close()
    w.close()
