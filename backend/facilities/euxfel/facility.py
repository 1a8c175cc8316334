"""European XFEL (the default facility): runs are announced on Kafka after migration and
correction (or, offline, seen appearing in the proposal's ``raw/`` and ``proc/``), read with
extra-data, checked train by train, and live in ``<root>/<INSTRUMENT>/<CYCLE>/p<proposal>``."""
from __future__ import annotations

import logging
from pathlib import Path

from backend.config import CONTEXT_SUBDIR, DAMNIT_SUBDIR
from backend.facilities import Facility, SourceContext

log = logging.getLogger(__name__)


class EuXFEL(Facility):
    name = "euxfel"
    defaults = {
        # Also listen to the online cluster's per-instrument topics (daq_run_complete /
        # online_correction_complete) for this proposal's instrument.
        "online": False,
        # Topic templates; {instrument} is the proposal's instrument in lower case (from the
        # proposal directory <root>/<INSTRUMENT>/<CYCLE>/p<proposal>, or "instrument" below).
        "online_topics": ["test.euxfel.{instrument}.daq", "test.euxfel.{instrument}.cal"],
        "instrument": None,
        # Where a proposal's AMORE context directory lives, relative to the proposal directory
        # (new directories: 'amore-proto init --proposal N', 'amore-proto gui N',
        # amore.api.open(N), the default destination of 'amore-proto import-damnit'); read
        # through Config.context_subdir, also from the site configuration.
        "context_subdir": str(CONTEXT_SUBDIR),
        # Where DAMNIT keeps its context directory (an AMORE database found there is used too).
        "damnit_subdir": str(DAMNIT_SUBDIR),
    }
    #: new context directories start from the generic template (instruments have their own)
    context_template = "generic"

    def run_sources(self, ctx: SourceContext) -> list:
        """The facility's Kafka events when the broker answers (``[kafka] event_topics``, and
        the online topics with ``euxfel.online``); the proposal's directories watched when
        ``[watch] enabled`` is true, or "auto" and no broker answers."""
        from backend.facilities.euxfel.source import FacilityEventSource, event_topics
        sources = []
        online = bool(ctx.broker) and ctx.broker_reachable
        if online:
            source = FacilityEventSource(
                ctx.config, ctx.proposal, ctx.db_id,
                topics=event_topics(ctx.config, ctx.settings, ctx.proposal, ctx.proposal_dir),
                on_problem=ctx.reporter("kafka"))
            # Join the consumer group before saying "Ready": events announced from then on
            # are delivered (a new group starts at the end of the topics).
            if not source.wait_ready(float(ctx.config["kafka"]["join_timeout"])):
                log.warning("Kafka consumer group not joined yet; events may be delayed")
            sources.append(source)
            log.info("Listening for run events on %s (topics %s); updates on %s", ctx.broker,
                     ", ".join(source.topics), ctx.config.update_topic(ctx.db_id))
        elif ctx.broker:
            log.warning("Kafka broker %s not reachable: running offline", ctx.broker)
        watch = ctx.config["watch"]["enabled"]
        if watch is True or (watch == "auto" and not online):
            if ctx.proposal_dir is None:
                log.error("Proposal %s not found under the data root; cannot watch for runs",
                          ctx.proposal)
            else:
                from backend.facilities.euxfel.directory import RunDirectoryWatcher
                sources.append(RunDirectoryWatcher(
                    ctx.proposal, ctx.proposal_dir,
                    quiet_seconds=ctx.config["watch"]["quiet_seconds"],
                    poll_seconds=ctx.config["watch"]["poll_seconds"]))
        return sources

    def runs_on_disk(self, proposal_dir: Path | None) -> set[int]:
        """Run numbers with a ``raw/r<NNNN>`` directory."""
        if proposal_dir is None:
            return set()
        out = set()
        for p in (Path(proposal_dir) / "raw").glob("r[0-9][0-9][0-9][0-9]*"):
            if p.name[1:].isdigit() and p.is_dir():
                out.add(int(p.name[1:]))
        return out

    def run_dir(self, proposal_dir: Path, run: int) -> Path:
        return Path(proposal_dir) / "raw" / f"r{run:04d}"

    def check_run(self, run_dir: Path, rules, max_gaps: int) -> dict:
        from backend.facilities.euxfel.check import check_euxfel_run
        return check_euxfel_run(run_dir, rules, max_gaps)

    def run_metadata(self, run_dir: Path) -> tuple[dict, str] | None:
        """extra-data's ``run_metadata()``; if that fails, the ``METADATA`` group of the first
        readable file."""
        try:
            from extra_data import RunDirectory
            meta, how = RunDirectory(str(run_dir)).run_metadata(), "extra_data.run_metadata"
        except Exception as e:
            log.debug("run_metadata() of %s failed (%s); reading METADATA", run_dir, e)
            meta, how = _h5_metadata(run_dir), "METADATA"
        return (meta, how) if meta else None

    def amore_toml(self, proposal, root: str | None = None) -> str:
        return "[euxfel]\nonline = false   # also the online cluster's per-instrument topics\n"


def _h5_metadata(run_dir: Path) -> dict | None:
    """The ``METADATA`` group of the run's first readable file, scalars only."""
    import h5py

    from backend.facilities.euxfel.check import run_files
    for p in run_files(run_dir):
        try:
            with h5py.File(p, "r") as f:
                out = {}
                for k, ds in f["METADATA"].items():
                    if hasattr(ds, "shape") and ds.shape in ((1,), ()):
                        out[k] = ds[()] if ds.shape == () else ds[0]
                return out
        except Exception:
            continue
    return None


FACILITY = EuXFEL()
