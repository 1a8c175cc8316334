"""Turning variable results into stored data: the per-run HDF5 file and the table values.

Every result is stored whole in ``extracted_data/p<proposal>_r<run>.h5`` (one group per
variable) and reduced to one table value (:class:`backend.store.writer.StoredValue`) for SQLite:

=====================================  =============================================
result                                 table value (``summary_type``)
=====================================  =============================================
bool / numpy bool                      ``bool`` (0/1)
int, float (numpy too)                 ``number`` (NaN stored as NULL)
complex                                ``complex`` (text such as ``"(1+2j)"``)
str                                    ``string``
array/DataArray with a ``summary``     ``number`` (the numpy reduction named by ``summary``)
1-D numeric array/DataArray            ``sparkline`` (float32 little-endian, <= N points)
2-D numeric array/DataArray            ``thumbnail`` (PNG, <= thumbnail_px per side)
matplotlib figure (or Axes)            ``thumbnail`` (PNG)
Plotly figure                          ``thumbnail`` (PNG drawn by :mod:`.figures`)
other arrays, xarray Dataset           ``array`` (text such as ``"float64 (4, 5, 6)"``)
exception / Skip                       ``error`` / ``skipped`` (NULL; message in attributes)
=====================================  =============================================

The HDF5 layout is ``/<name>/data`` (dataset) with attributes ``amore_type`` (``scalar``,
``string``, ``ndarray``, ``DataArray``, ``Dataset``, ``figure``, ``plotly``) and ``units``;
DataArrays add ``/<name>/coords/<dim>`` datasets and a ``dims`` attribute (JSON list); Datasets
store each data variable as a DataArray group under ``/<name>/vars/<var>``; figures store PNG
bytes (uint8); Plotly figures store Plotly's JSON as UTF-8 bytes (uint8, gzip-compressed).

Groups written by DAMNIT (files imported by ``amore-proto import-damnit``: no ``amore_type``;
DAMNIT's ``_damnit_objtype`` instead) are read too, as DAMNIT's own API reads them: xarray
objects from their netCDF4 groups (h5netcdf), Plotly figures from their JSON, pandas objects
from their Parquet bytes (needs pyarrow), everything else from ``/<name>/data``.

Units shown with a table value: the :class:`Cell`'s, else the variable's, else the ``units``
attribute of a returned DataArray (as DAMNIT does).
"""
from __future__ import annotations

import io
import json
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from backend.contextdir import ContextDir
from backend.ctxrunner.figures import (THUMBNAIL_PX, figure_from_json, figure_json,
                                       is_plotly_figure, render_png)
from backend.files import share_like_dir
from backend.vocab import StoredValue, SummaryType

def h5_path(context_dir: str | os.PathLike, proposal: int, run: int) -> Path:
    """``DIR/extracted_data/p<proposal>_r<run>.h5`` (:meth:`backend.contextdir.ContextDir.run_file`)."""
    return ContextDir(context_dir).run_file(proposal, run)


def _is_figure(v) -> bool:
    return type(v).__module__.startswith("matplotlib") and hasattr(v, "savefig")


def _axes_to_figure(v):
    """A matplotlib Axes returned by a variable stands for its whole figure."""
    if type(v).__module__.startswith("matplotlib") and hasattr(v, "get_figure") \
            and not hasattr(v, "savefig"):
        return v.get_figure()
    return v


def _is_xarray(v, cls: str) -> bool:
    return type(v).__name__ == cls and type(v).__module__.startswith("xarray")


def _numeric(a: np.ndarray) -> bool:
    return a.dtype.kind in "biuf"


def downsample_1d(a: np.ndarray, n: int) -> np.ndarray:
    """Bucket means of a 1-D array to at most ``n`` points (float32; NaN-aware)."""
    a = np.asarray(a, dtype=np.float64).ravel()
    if a.size <= n:
        return a.astype(np.float32)
    edges = np.linspace(0, a.size, n + 1).astype(int)
    with np.errstate(invalid="ignore"):
        sums = np.add.reduceat(np.nan_to_num(a), edges[:-1])
        counts = np.add.reduceat(np.isfinite(a).astype(np.int64), edges[:-1])
        out = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
    return out.astype(np.float32)


def _downsample_2d(a: np.ndarray, px: int) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    step = max(1, int(np.ceil(max(a.shape) / px)))
    if step > 1:
        h, w = (a.shape[0] // step) * step, (a.shape[1] // step) * step
        if h and w:
            with warnings.catch_warnings():  # all-NaN blocks stay NaN
                warnings.simplefilter("ignore", RuntimeWarning)
                a = np.nanmean(a[:h, :w].reshape(h // step, step, w // step, step), axis=(1, 3))
        else:
            a = a[::step, ::step]
    return a


def thumbnail_png(a: np.ndarray, px: int = 150) -> bytes:
    """PNG (RGB, viridis, levels at the 1st/99th percentile) of a 2-D array, longest side <= px."""
    from matplotlib import colormaps
    from PIL import Image

    img = _downsample_2d(a, px)
    finite = img[np.isfinite(img)]
    lo, hi = (np.percentile(finite, [1, 99]) if finite.size else (0.0, 1.0))
    if hi <= lo:
        hi = lo + 1.0
    norm = np.clip((img - lo) / (hi - lo), 0, 1)
    rgba = colormaps["viridis"](np.nan_to_num(norm), bytes=True)
    rgba[~np.isfinite(img)] = (255, 255, 255, 255)
    buf = io.BytesIO()
    # zlib's default level: 2.7 ms for a 128 x 128 camera image; optimize=True (level 9 and
    # more tries) took 15.5 ms for a file 4 % smaller
    Image.fromarray(rgba[..., :3]).save(buf, format="PNG")
    return buf.getvalue()


def figure_png(fig, px: int | None = None, dpi: float = 100) -> bytes:
    """PNG of a matplotlib figure; scaled so its longest side is about ``px`` if given."""
    if px is not None:
        w, h = fig.get_size_inches()
        dpi = px / max(w, h)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def scalar_value(v) -> StoredValue | None:
    """The table value of a Python/numpy scalar (bool, int, float, complex, str, bytes); None
    for anything else."""
    if isinstance(v, (bool, np.bool_)):
        return StoredValue(int(bool(v)), SummaryType.BOOL.value)
    if isinstance(v, (int, np.integer)):
        return StoredValue(int(v), SummaryType.NUMBER.value)
    if isinstance(v, (float, np.floating)):
        f = float(v)
        return StoredValue(None if np.isnan(f) else f, SummaryType.NUMBER.value, {"nan": True} if np.isnan(f) else {})
    if isinstance(v, (complex, np.complexfloating)):
        return StoredValue(str(complex(v)), SummaryType.COMPLEX.value)
    if isinstance(v, str):
        return StoredValue(v, SummaryType.STRING.value)
    if isinstance(v, bytes):
        return StoredValue(v.decode("utf-8", "replace"), SummaryType.STRING.value)
    return None


def table_value(value: Any, *, summary: str | None = None, units: str | None = None,
                thumbnail_px: int = 150, sparkline_points: int = 100) -> StoredValue:
    """The table value of a variable's result (see the module docstring).

    ``value`` may be a :class:`backend.ctxrunner.context.Cell`. ``summary`` is the variable's numpy
    reduction name. Raises ``TypeError`` for result types AMORE cannot store and ``ValueError``
    for an unknown summary name.
    """
    attrs: dict[str, Any] = {}
    preview = None
    summary_value = None
    if type(value).__name__ == "Cell" and hasattr(value, "summary_value"):
        cell = value
        value = cell.data
        summary = cell.summary or summary
        units = cell.units or units
        preview, summary_value = cell.preview, cell.summary_value
        if cell.bold is not None:
            attrs["bold"] = bool(cell.bold)
        if cell.background is not None:
            bg = cell.background
            attrs["background"] = list(bg) if isinstance(bg, (tuple, list, np.ndarray)) else str(bg)
    if not units and type(value).__name__ == "DataArray":
        da_units = getattr(value, "attrs", {}).get("units")
        if isinstance(da_units, str) and da_units:
            units = da_units  # as DAMNIT does, when neither the Cell nor the Variable gives units
    if units:
        attrs["units"] = units

    def done(sv: StoredValue) -> StoredValue:
        sv.attributes = {**sv.attributes, **attrs}
        return sv

    value, preview = _axes_to_figure(value), _axes_to_figure(preview)
    if summary_value is not None:
        sv = scalar_value(summary_value)
        if sv is None:
            raise TypeError(f"Cell summary_value must be a number or string, "
                            f"not {type(summary_value).__name__}")
        return done(sv)
    if value is None and preview is None:
        return done(StoredValue(None, "none"))
    sv = scalar_value(value)
    if sv is not None:
        return done(sv)

    target = preview if preview is not None else value
    if _is_figure(target):
        return done(StoredValue(figure_png(target, px=thumbnail_px * 2), SummaryType.THUMBNAIL.value))
    if is_plotly_figure(target):
        return done(StoredValue(render_png(target, px=max(thumbnail_px * 2, THUMBNAIL_PX)),
                                SummaryType.THUMBNAIL.value))
    if _is_xarray(value, "Dataset"):
        return done(StoredValue(f"Dataset ({', '.join(map(str, value.data_vars))})", SummaryType.ARRAY.value))

    arr = np.asarray(getattr(target, "values", target))
    if arr.dtype == object:
        raise TypeError(f"cannot store a result of type {type(target).__name__} "
                        f"with object dtype")
    attrs["shape"] = list(np.shape(value.values if hasattr(value, "values") else value))
    attrs["dtype"] = str(arr.dtype)
    if summary and preview is None:
        func = getattr(np, summary, None)
        if func is None or not callable(func):
            raise ValueError(f"unknown summary {summary!r} (use a numpy function name such as "
                             f"'mean', 'nanmax', 'std')")
        with np.errstate(all="ignore"):
            red = func(np.asarray(getattr(value, "values", value)))
        sv = scalar_value(red.item() if isinstance(red, np.ndarray) and red.size == 1 else red)
        if sv is None:
            raise TypeError(f"summary {summary!r} gave a {type(red).__name__}, not a number")
        return done(sv)
    if arr.ndim == 0:
        sv = scalar_value(arr.item())
        if sv is not None:
            return done(sv)
    if _numeric(arr) and arr.ndim == 1:
        return done(StoredValue(downsample_1d(arr, sparkline_points).astype("<f4").tobytes(),
                                SummaryType.SPARKLINE.value))
    if _numeric(arr) and arr.ndim == 2 and min(arr.shape) > 1:
        return done(StoredValue(thumbnail_png(arr, thumbnail_px), SummaryType.THUMBNAIL.value))
    if _numeric(arr) and arr.ndim == 2:
        return done(StoredValue(downsample_1d(arr.ravel(), sparkline_points).astype("<f4").tobytes(),
                                SummaryType.SPARKLINE.value))
    return done(StoredValue(f"{arr.dtype} {tuple(arr.shape)}", SummaryType.ARRAY.value))


# --- HDF5 ---------------------------------------------------------------------------------

def _write_array_group(grp, value) -> None:
    import h5py
    if _is_xarray(value, "DataArray"):
        grp.attrs["amore_type"] = "DataArray"
        grp.create_dataset("data", data=np.asarray(value.values))
        grp.attrs["dims"] = json.dumps([str(d) for d in value.dims])
        if value.name is not None:
            grp.attrs["name"] = str(value.name)
        coords = grp.create_group("coords")
        for cname, coord in value.coords.items():
            vals = np.asarray(coord.values)
            if vals.dtype.kind in "biufc":
                ds = coords.create_dataset(str(cname), data=vals)
            elif vals.dtype.kind == "M":
                ds = coords.create_dataset(str(cname), data=vals.astype("datetime64[ns]").astype("i8"))
                ds.attrs["datetime64"] = "ns"
            else:
                ds = coords.create_dataset(str(cname), data=vals.astype(str).astype(object),
                                           dtype=h5py.string_dtype())
            ds.attrs["dims"] = json.dumps([str(d) for d in coord.dims])
        for k, v in value.attrs.items():
            if isinstance(v, (int, float, str, np.number)):
                grp.attrs[f"attr_{k}"] = v
        return
    arr = np.asarray(value)
    if arr.dtype.kind in "US" or arr.dtype == object:
        grp.attrs["amore_type"] = "string"
        grp.create_dataset("data", data=arr.astype(str).astype(object), dtype=h5py.string_dtype())
    else:
        grp.attrs["amore_type"] = "ndarray" if arr.ndim else "scalar"
        grp.create_dataset("data", data=arr)


def write_value_group(f, name: str, value: Any, units: str | None = None) -> None:
    """Write one result into HDF5 file/group ``f`` as ``/<name>`` (replacing an existing one).
    Raises ``TypeError`` for results that cannot be stored."""
    import h5py
    if type(value).__name__ == "Cell" and hasattr(value, "summary_value"):
        units = value.units or units
        value = value.data
    value = _axes_to_figure(value)
    if name in f:
        del f[name]
    grp = f.create_group(name)
    if units:
        grp.attrs["units"] = units
    if value is None:
        grp.attrs["amore_type"] = "none"
    elif _is_figure(value):
        grp.attrs["amore_type"] = "figure"
        grp.create_dataset("data", data=np.frombuffer(figure_png(value), dtype=np.uint8))
    elif is_plotly_figure(value):
        grp.attrs["amore_type"] = "plotly"
        grp.create_dataset("data", data=np.frombuffer(figure_json(value).encode("utf-8"),
                                                      dtype=np.uint8), compression="gzip")
    elif isinstance(value, str):
        grp.attrs["amore_type"] = "string"
        grp.create_dataset("data", data=value, dtype=h5py.string_dtype())
    elif _is_xarray(value, "Dataset"):
        grp.attrs["amore_type"] = "Dataset"
        sub = grp.create_group("vars")
        for vname, da in value.data_vars.items():
            _write_array_group(sub.create_group(str(vname)), da)
    elif isinstance(value, (complex, np.complexfloating)):
        grp.attrs["amore_type"] = "scalar"
        grp.create_dataset("data", data=np.complex128(value))
    else:
        arr = np.asarray(getattr(value, "values", value))
        if arr.dtype == object and not _is_xarray(value, "DataArray"):
            del f[name]
            raise TypeError(f"cannot store a result of type {type(value).__name__}")
        _write_array_group(grp, value)


def write_run_file(path: str | os.PathLike, values: dict[str, tuple[Any, str | None]]) -> dict[str, str]:
    """Store results in the run's HDF5 file, replacing groups of the same names.

    ``values``: name -> (result, units). The file is changed on a copy which then replaces the
    original, so a killed worker never leaves a half-written file, and readers never see one.
    Writers of the same run (the backend and a ``reprocess`` at once) take turns through an
    ``flock`` on ``.p<P>_r<R>.h5.lock`` beside it, so neither loses the other's groups.
    Returns name -> error message for results that could not be stored (the others are stored).
    """
    return _locked_replace(Path(path), values)


def _locked_replace(path: Path, values: dict[str, tuple[Any, str | None]],
                    copy_from: Path | None = None, copy_names=()) -> dict[str, str]:
    import fcntl
    path.parent.mkdir(parents=True, exist_ok=True)
    lock_path = path.parent / f".{path.name}.lock"
    with open(lock_path, "a") as lock:
        share_like_dir(lock_path, path.parent)
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file is closed
        return _replace_groups(path, values, copy_from, copy_names)


def damnit_group_names(path: str | os.PathLike) -> set[str]:
    """Names of the variables in a run file (DAMNIT's or AMORE's; not DAMNIT's ``.reduced``,
    ``.preview``, ``.errors``)."""
    import h5py
    with h5py.File(path, "r") as f:
        return {k for k in f.keys() if not k.startswith(".")}


def copy_run_groups(src: str | os.PathLike, dest: str | os.PathLike,
                    names) -> dict[str, str]:
    """Copy the variables ``names`` of run file ``src`` (DAMNIT's, read only) into run file
    ``dest``, replacing groups of the same names as :func:`write_run_file` does (on a copy,
    under its lock). xarray objects (netCDF4 groups, whose dimension scales HDF5 cannot copy
    between files) are rewritten in AMORE's layout; other groups are copied as they are.
    Returns name -> error message for variables that could not be copied."""
    import h5py
    src = Path(src)
    rewrite: dict[str, tuple[Any, str | None]] = {}
    raw = []
    errors = {}
    with h5py.File(src, "r") as f:
        kinds = {n: f[n].attrs.get(DAMNIT_OBJTYPE, "") for n in names if n in f}
    for n in names:
        kind = kinds.get(n)
        if kind is None:
            errors[n] = f"not in {src.name}"
        elif kind in ("dataarray", "dataset", b"dataarray", b"dataset"):
            try:
                v = read_run_value(src, n)
            except Exception as e:  # noqa: BLE001 - reported, the others are copied
                errors[n] = f"{type(e).__name__}: {e}"
                continue
            rewrite[n] = (v, None)
        else:
            raw.append(n)
    errors.update(_locked_replace(Path(dest), rewrite, src, raw))
    return errors


def _replace_groups(path: Path, values: dict[str, tuple[Any, str | None]],
                    copy_from: Path | None = None, copy_names=()) -> dict[str, str]:
    import h5py
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}-", suffix=".h5.tmp", dir=path.parent)
    os.close(fd)
    errors = {}
    try:
        if path.exists():
            shutil.copyfile(path, tmp)
            mode = "r+"
        else:
            mode = "w"
        with h5py.File(tmp, mode) as f:
            for name, (value, units) in values.items():
                try:
                    write_value_group(f, name, value, units)
                except Exception as e:  # one bad result never loses the others
                    errors[name] = f"{type(e).__name__}: {e}"
            if copy_names:
                with h5py.File(copy_from, "r") as fsrc:
                    for name in copy_names:
                        try:
                            if name in f:
                                del f[name]
                            fsrc.copy(fsrc[name], f, name)
                        except Exception as e:  # noqa: BLE001 - one never loses the others
                            errors[name] = f"{type(e).__name__}: {e}"
        share_like_dir(tmp, path.parent)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return errors


def read_run_value(path: str | os.PathLike, name: str):
    """Read one variable back from a run's HDF5 file.

    Returns a numpy array / scalar / str, an ``xarray.DataArray`` (``amore_type`` DataArray),
    a dict of DataArrays (Dataset), PNG ``bytes`` (matplotlib figure), or a
    ``plotly.graph_objects.Figure`` (Plotly figure). Groups DAMNIT wrote (imported files) give
    what DAMNIT's API gives: an ``xarray.DataArray``/``xarray.Dataset``, a Plotly ``Figure``,
    a ``pandas.DataFrame``/``Series``, the RGBA ``uint8`` array of a matplotlib figure, or the
    array / scalar / str. Raises ``KeyError`` if the variable is not in the file,
    ``FileNotFoundError`` if the file does not exist.
    """
    import h5py
    with h5py.File(path, "r") as f:
        if name.startswith("."):        # DAMNIT's .reduced/.preview/.errors are no variables
            raise KeyError(name)
        grp = f[name]
        if "amore_type" not in grp.attrs:
            return _read_damnit_group(grp)
        return _read_group(grp)


#: DAMNIT's ``_damnit_objtype`` attribute (its ``DataType`` values) on groups it wrote.
DAMNIT_OBJTYPE = "_damnit_objtype"


def _read_damnit_group(grp):
    """A variable's group as DAMNIT 0.4.0 writes it (``damnit_writing.DamnitFileWriter``)."""
    import h5py
    kind = grp.attrs.get(DAMNIT_OBJTYPE, "")
    if isinstance(kind, bytes):
        kind = kind.decode()
    if kind in ("dataarray", "dataset"):
        import xarray as xr
        load = xr.load_dataarray if kind == "dataarray" else xr.load_dataset
        obj = load(grp.file.filename, group=grp.name, engine="h5netcdf")
        obj.attrs = {k: v for k, v in obj.attrs.items() if not str(k).startswith("_damnit_")}
        return obj
    ds = grp["data"]
    if kind == "PlotlyFigure":
        return figure_from_json(ds[()].tobytes())
    if kind in ("dataframe", "series"):
        import pandas as pd
        try:
            df = pd.read_parquet(io.BytesIO(ds[()].tobytes()))
        except ImportError as e:
            raise ImportError(f"reading a pandas object DAMNIT stored needs pyarrow: {e}") from e
        return df.iloc[:, 0] if kind == "series" else df
    if h5py.check_string_dtype(ds.dtype) is not None:
        if ds.ndim == 0:
            return ds[()].decode("utf-8", "surrogateescape")
        return ds.asstr("utf-8", "surrogateescape")[()]
    return ds[()]


def _read_group(grp):
    t = grp.attrs.get("amore_type", "ndarray")
    if t == "plotly":
        return figure_from_json(grp["data"][()].tobytes())
    if t == "none":
        return None
    if t == "figure":
        return grp["data"][()].tobytes()
    if t == "string":
        v = grp["data"][()]
        if isinstance(v, bytes):
            return v.decode()
        if isinstance(v, np.ndarray):
            return v.astype(str)
        return v
    if t == "Dataset":
        return {k: _read_group(g) for k, g in grp["vars"].items()}
    if t == "DataArray":
        import xarray as xr
        dims = json.loads(grp.attrs["dims"])
        coords = {}
        for cname, ds in grp.get("coords", {}).items():
            vals = ds[()]
            if ds.attrs.get("datetime64"):
                vals = vals.astype("datetime64[ns]")
            elif vals.dtype == object:
                vals = vals.astype(str)
            coords[cname] = (json.loads(ds.attrs["dims"]), vals)
        return xr.DataArray(grp["data"][()], dims=dims, coords=coords,
                            name=grp.attrs.get("name"))
    return grp["data"][()]


def warm_up(thumbnail_px: int = 150, sparkline_points: int = 100) -> None:
    """Convert and store a few made-up results (a number with units, an image, a train-resolved
    ``xarray.DataArray`` with and without a summary, a text) the way a run's results are, in a
    temporary file, so that what those paths load on first use (pint's unit registry,
    matplotlib's colour maps and PIL for thumbnails, xarray's array-type checks) is loaded
    before a worker's first run instead of during it (~0.35 s). Never raises."""
    try:
        import xarray as xr
        trend = xr.DataArray(np.arange(4.0), dims=["trainId"], coords={"trainId": np.arange(1, 5)})
        samples = {"number": (1.5, "uJ"), "image": (np.arange(64.0).reshape(8, 8), None),
                   "trend": (trend, "uJ"), "text": ("warm", None)}
        for value, units in samples.values():
            table_value(value, units=units, thumbnail_px=thumbnail_px,
                        sparkline_points=sparkline_points)
        table_value(trend, summary="mean", units="uJ")
        with tempfile.TemporaryDirectory(prefix="amore-warm-") as d:
            write_run_file(Path(d) / "warm.h5", samples)
    except Exception:  # noqa: BLE001 - only a speed-up
        pass
