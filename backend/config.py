"""AMORE configuration: defaults for European XFEL, overridable per site and per context directory.

Configuration is layered, later layers win:

1. built-in defaults (:data:`DEFAULTS`, the European XFEL setup);
2. a site file, TOML, named by ``$AMORE_SITE_CONFIG`` (e.g. provided by the ``module load``
   environment of a facility);
3. ``DIR/amore.toml`` in the context directory;
4. environment variables: ``AMORE_BROKER`` (``host:port``; ``none`` or empty disables Kafka),
   ``EXTRA_DATA_DATA_ROOT`` (data root, as extra-data uses it).

Nothing site-specific is hard-coded elsewhere in AMORE: hosts, topics, paths and Slurm options are
read from a :class:`Config`.
"""
from __future__ import annotations

import copy
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

from backend.contextdir import ContextDir

#: Where a new AMORE context directory of a proposal lives by convention (European XFEL),
#: relative to the proposal directory: the default of the site setting ``[euxfel] context_subdir``.
CONTEXT_SUBDIR = Path("usr") / "Shared" / "amore-proto"
#: Where DAMNIT keeps a proposal's context directory (``[euxfel] damnit_subdir``). AMORE
#: directories made there before AMORE moved to :data:`CONTEXT_SUBDIR` keep working there;
#: a DAMNIT database there is never changed (``amore-proto import-damnit`` takes it over).
DAMNIT_SUBDIR = Path("usr") / "Shared" / "amore"
#: extra-data's own default data root (European XFEL), used when nothing else is configured.
DEFAULT_DATA_ROOT = "/gpfs/exfel/exp"

#: Built-in defaults. Keys mirror the TOML tables of ``amore.toml``.
DEFAULTS: dict[str, Any] = {
    # Which facility this context directory serves: one of the folders of backend/facilities
    # ("euxfel", "ess", "esrf", "swissfel"). It decides where runs come from and what the context
    # file's first argument and meta# inputs are; the facility's own [<facility>] table and its
    # defaults are in its folder (backend/facilities/<facility>/facility.py).
    "facility": "euxfel",
    # Metadata columns without Python: [columns.NAME] with "key" (a metadata key; "a.b" for
    # nested keys) or "hdf5" (a dataset path in the run's NeXus/HDF5 file), "type" (number,
    # integer, string, boolean), optional "units", "title" and, for arrays, "reduce" (first,
    # last, mean, min, max).
    "columns": {},
    "kafka": {
        # Broker for facility events and AMORE's own update messages. None = offline.
        "broker": None,
        # Topics carrying the facility's run events (JSON values; European XFEL's).
        "event_topics": ["test.r2d2", "cal.offline-corrections"],
        # Facility event name -> which data it makes available ("raw" or "proc")
        # (European XFEL's events, backend/facilities/euxfel).
        "events": {
            "migration_complete": "raw",
            "run_corrections_complete": "proc",
            "daq_run_complete": "raw",
            "online_correction_complete": "proc",
        },
        # Consumer group; {db_id} and {proposal} are filled in.
        "consumer_group": "amore-listener-{db_id}",
        # Topic for AMORE's update messages; {db_id} is filled in.
        "update_topic": "amore.db-{db_id}",
        # Seconds to wait for the broker when starting before falling back to offline mode.
        "connect_timeout": 5.0,
        # Seconds to wait at start-up for the consumer group to be joined.
        "join_timeout": 30.0,
        # Where a brand-new consumer group starts reading the event topics: "latest" (only
        # events announced from now on) or "earliest" (everything the broker still holds).
        "auto_offset_reset": "latest",
    },
    "data": {
        # Root of the proposal tree (<root>/<INSTRUMENT>/<CYCLE>/p<proposal>). None = extra-data's
        # own default / $EXTRA_DATA_DATA_ROOT.
        "root": None,
    },
    "watch": {
        # Offline mode: watch raw/ and proc/ of the proposal for new run directories.
        # "auto" = only when no broker is configured or reachable; true/false force it.
        "enabled": "auto",
        # A run directory is announced once no file in it changed for this many seconds.
        "quiet_seconds": 10.0,
        # How often the quiet timers are checked, seconds.
        "poll_seconds": 0.5,
    },
    "processing": {
        # Worker processes evaluating the context file; 0 = number of CPUs (at most 4).
        "jobs": 0,
        # Python interpreter for the context file (an environment with the user's packages).
        # None = the interpreter running AMORE.
        "context_python": None,
        # Processes one run may use while other workers are idle: its worker shares the files
        # map and the variables (in groups, by the seconds they took on the last run) with
        # forked copies of itself, so a new run's row fills sooner. 1 = one process per run.
        "processes_per_run": 2,
        # Seconds a run may take before its worker is killed and the run marked failed.
        "run_timeout": 3600.0,
        # Seconds between retries of runs whose values could not be stored (disk full...).
        "store_retry_seconds": 30.0,
        # Address-space limit of each worker process, MB (0 = none). A variable allocating
        # more gets an "out of memory" error instead of exhausting the machine.
        "worker_memory_mb": 0,
        # Freed memory (MB) each worker keeps for its next run instead of handing it back to
        # the system: a run's arrays then reuse pages that are already there (fresh memory
        # costs page faults, on virtual machines up to ~1.5 s per GB after a few idle seconds).
        # A worker whose freed memory exceeds this after a run hands all of it back. 0 = keep none.
        "worker_keep_mb": 512,
        # Thumbnail size (longest side, pixels) for 2-D data and figures.
        "thumbnail_px": 150,
        # Number of points kept for a 1-D sparkline.
        "sparkline_points": 100,
        # Which variables are computed by Slurm jobs when Slurm is available ([slurm] enabled):
        # "cluster" (those with cluster=True, and those depending on them), "all", "none".
        "slurm": "cluster",
        # Modules (importable names, e.g. ["mylib"]) whose code counts as the context file's:
        # a change in them marks the values of the variables using them stale and is loaded
        # anew. Changes in other imported modules are not noticed (docs: "Stale values").
        "watch_modules": [],
        # When the context file is loaded again after a change, recompute the values that are
        # now stale (as 'amore-proto reprocess all' does). Off: saving a half-finished edit
        # would start recomputing past runs at once, taking workers from new runs; run
        # 'amore-proto reprocess all' (or the GUI's Reprocess) when the edit is done.
        "recompute_on_change": False,
        # 'amore-proto reprocess all' (also the GUI's and the browser's Reprocess) on the
        # machine where the backend runs hands what is stale to the backend's warm workers when
        # that work is estimated at most this many seconds (a changed function of a light
        # variable: no new Python, no imports, no load of the context file); more is computed
        # in workers of the command's own, so that new runs do not wait for it. 0 = never.
        "handover_seconds": 5.0,
    },
    "mymdc": {
        # The facility's metadata service (for "mymdc#..." inputs; backend/mymdc.py): base URL
        # of its API as AMORE reaches it. None = not available.
        "url": None,
        # API key: given here, or read from token_file, sent in this HTTP header.
        "token": None,
        "token_file": None,
        "header": "X-API-key",
        "timeout": 10.0,
    },
    "logbook": {
        # Posting rows and pictures to the beamtime's logbook (backend/logbook.py). A zulip.cfg
        # next to context.py (the facility's logbook proxy, as DAMNIT has it) comes first;
        # otherwise a Zulip server directly: a zuliprc file ([api] email, key, site; readable
        # by its owner only), the stream and the topic to post to.
        "zuliprc": None,
        "stream": None,
        "topic": "AMORE",
        "topics": [],
        # Longest message (characters; Zulip's limit); longer tables are split between rows.
        "message_limit": 10000,
    },
    "check": {
        # Data consistency check of every run ("Data check" column, 'amore-proto check').
        # Sources not checked (glob patterns, e.g. "*/CAM/*:daqOutput").
        "skip": [],
        # Sources that legitimately record less often: pattern = fraction of the run's trains
        # they must have (first match wins; default 1.0), e.g. {"*MOTOR*" = 0.5}.
        "expected_fraction": {},
        # How many gaps of missing trains a report lists per source.
        "max_gaps": 5,
        # Checksums of every file of a run (raw and proc) after its variables are stored.
        "checksums": True,
        # blake2b (as b2sum), sha256 or sha512.
        "checksum_algorithm": "blake2b",
        # File names (glob) in run directories that are not data and may change.
        "checksum_exclude": ["karabo_data_map.json", ".*"],
    },
    "slurm": {
        # Slurm for heavy variables and big reprocessing (backend/processing/slurm.py):
        # "auto" = use it where `sbatch` is found and Slurm answers; true; false.
        "enabled": "auto",
        "partition": "upex",
        # Time limit of each job (sbatch --time).
        "time": "02:00:00",
        # Further sbatch options, e.g. ["--reservation=upex_002832", "--mem=25G", "--account=exfel"].
        "extra_args": [],
        # Array throttle (%N): at most this many tasks of one reprocess run at once.
        "max_concurrent": 15,
        # At most this many tasks per array job; larger reprocesses are chained arrays.
        "max_array_size": 1000,
        # Runs one array task of a reprocess computes, one after the other (start-up, imports
        # and scheduling are paid once per task). "auto": about 2 tasks per max_concurrent.
        "runs_per_task": "auto",
        # Seconds between checks of the job states (squeue/scontrol/sacct) and result files.
        "poll_seconds": 5.0,
        # Also notice a result file at once through inotify (jobs on this host, local file
        # systems; GPFS does not report other hosts' writes, so the checks above stay).
        "watch_results": True,
        # Seconds a Slurm command (sbatch, squeue, ...) may take.
        "command_timeout": 30.0,
    },
    "backend": {
        # How the GUI and 'amore-proto backend' run the backend (backend/service/manager.py): in this
        # tmux session, on a tmux server bound to DIR/amore-tmux.sock.
        "tmux_session": "AMORE",
        # Shell command run in that session. None = "<the running Python> -m amore.cli listen
        # DIR" (works inside a venv/conda environment without PATH). Otherwise a string in
        # which {python} and {dir} are replaced (shell-quoted).
        "command": None,
        # tmux configuration file of that tmux server. "/dev/null" keeps personal ~/.tmux.conf
        # settings (such as remain-on-exit) from changing how the backend is supervised;
        # "" = tmux's usual configuration files.
        "tmux_config": "/dev/null",
        # Seconds to wait for a started backend to report, and for a stopped one to exit.
        "start_timeout": 30.0,
        "stop_timeout": 30.0,
        # Seconds between refreshes of DIR/backend-status.json while nothing else changes. A
        # record from another host not refreshed for 4x this (at least 2 min) counts as stale
        # (backend.service.status.reported_recently).
        "heartbeat_seconds": 30.0,
        # amore.log is rotated when it reaches this size (MB): it becomes amore.log.1, the
        # older ones amore.log.2 ... amore.log.<log_backups>, the oldest is dropped. The log
        # never takes more than log_max_mb * (log_backups + 1) MB. 0 = never rotated.
        "log_max_mb": 10.0,
        "log_backups": 5,
    },
}


def _merge(base: dict, override: dict) -> dict:
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = value
    return base


def _read_toml(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: {e}") from e


class ConfigError(Exception):
    """A configuration file could not be read or has an invalid value."""


@dataclass
class Config:
    """Effective configuration of one context directory.

    ``values`` is the merged nested dict (see :data:`DEFAULTS` for the keys).
    """

    values: dict = field(default_factory=lambda: copy.deepcopy(DEFAULTS))

    def __getitem__(self, section: str) -> dict:
        return self.values[section]

    @property
    def broker(self) -> str | None:
        """Kafka bootstrap address ``host:port``, or None when AMORE runs without Kafka."""
        b = self.values["kafka"]["broker"]
        if b is None or str(b).strip().lower() in ("", "none", "off"):
            return None
        return str(b).strip()

    @property
    def data_root(self) -> Path | None:
        """Configured root of the proposal tree, or None (extra-data's default applies)."""
        r = self.values["data"]["root"]
        return Path(r) if r else None

    def effective_data_root(self) -> Path:
        """The data root in force: configured, else ``$EXTRA_DATA_DATA_ROOT``, else
        :data:`DEFAULT_DATA_ROOT`."""
        return self.data_root or Path(os.environ.get("EXTRA_DATA_DATA_ROOT") or DEFAULT_DATA_ROOT)

    @property
    def jobs(self) -> int:
        n = int(self.values["processing"]["jobs"])
        if n <= 0:
            n = min(os.cpu_count() or 1, 4)
        return n

    def event_kinds(self) -> dict[str, str]:
        """Facility event name -> ``"raw"`` or ``"proc"``."""
        return dict(self.values["kafka"]["events"])

    def update_topic(self, db_id: str) -> str:
        return self.values["kafka"]["update_topic"].format(db_id=db_id)

    @property
    def facility(self) -> str:
        """The facility's name (``facility``, lower case; default ``euxfel``). Its plug-in,
        ``backend.facilities.get(config.facility)``, raises for a facility AMORE does not
        know."""
        return str(self.values.get("facility") or DEFAULTS["facility"]).strip().lower()

    @property
    def context_subdir(self) -> Path:
        """Where a proposal's AMORE context directory lives, relative to its proposal directory
        (``[euxfel] context_subdir``, default :data:`CONTEXT_SUBDIR`)."""
        return Path((self.values.get("euxfel") or {}).get("context_subdir") or CONTEXT_SUBDIR)

    @property
    def damnit_subdir(self) -> Path:
        """Where DAMNIT keeps a proposal's context directory, relative to its proposal directory
        (``[euxfel] damnit_subdir``, default :data:`DAMNIT_SUBDIR`)."""
        return Path((self.values.get("euxfel") or {}).get("damnit_subdir") or DAMNIT_SUBDIR)

    def import_destination(self, damnit_dir: str | os.PathLike) -> Path | None:
        """Where ``amore-proto import-damnit`` puts the AMORE directory of DAMNIT's directory
        ``damnit_dir`` by default: ``<proposal dir>/<context_subdir>`` when ``damnit_dir`` is
        ``<proposal dir>/<damnit_subdir>``; None for a directory elsewhere."""
        d = Path(damnit_dir).absolute()
        parts = self.damnit_subdir.parts
        if len(d.parts) > len(parts) and d.parts[-len(parts):] == parts:
            return Path(*d.parts[:-len(parts)]) / self.context_subdir
        return None

    def consumer_group(self, db_id: str, proposal: int | str | None) -> str:
        return self.values["kafka"]["consumer_group"].format(db_id=db_id, proposal=proposal)


def load_config(context_dir: str | os.PathLike | None = None, environ=None) -> Config:
    """Build the effective :class:`Config` for ``context_dir``.

    Raises :class:`ConfigError` if a TOML file is malformed.
    """
    environ = os.environ if environ is None else environ
    values = copy.deepcopy(DEFAULTS)
    site = environ.get("AMORE_SITE_CONFIG")
    if site:
        _merge(values, _read_toml(Path(site)))
    if context_dir is not None:
        local = ContextDir(context_dir).config_file
        if local.is_file():
            _merge(values, _read_toml(local))
    if "AMORE_BROKER" in environ:
        values["kafka"]["broker"] = environ["AMORE_BROKER"]
    if environ.get("EXTRA_DATA_DATA_ROOT") and not values["data"]["root"]:
        values["data"]["root"] = environ["EXTRA_DATA_DATA_ROOT"]
    return Config(values)
