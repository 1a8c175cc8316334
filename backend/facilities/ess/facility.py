"""ESS: runs are announced by the file writer (kafka-to-nexus) on Kafka as flatbuffers
(``pl72`` / ``6s4t`` / ``wrdn``) and are NeXus files; a run is shown while it is being taken and
computed once its file is closed."""
from __future__ import annotations

import logging

from backend.facilities import Facility, SourceContext

log = logging.getLogger(__name__)


class Ess(Facility):
    name = "ess"
    defaults = {
        # Topics carrying the file writer's pl72 / 6s4t / wrdn messages (broker: [kafka] broker).
        "topics": ["ymir_filewriter"],
        # Regex on the file name; group 1 = run number (coda_estia_999999_00013947.hdf -> 13947).
        "run_number_pattern": r"_(\d+)\.(?:hdf|nxs|h5)$",
        # Where the file name is relative to (the file writer's output directory as AMORE sees
        # it); "" = file names are absolute.
        "file_root": "",
        # Key of the proposal in the pl72 metadata JSON (else: taken from the file path).
        "proposal_key": "proposal",
        # Opening a file the writer still holds is retried this many times, this far apart.
        "open_retries": 5,
        "open_retry_seconds": 1.0,
    }

    def run_sources(self, ctx: SourceContext) -> list:
        """The file writer's messages on ``ess.topics``; none without a reachable broker."""
        if not ctx.broker:
            log.error("facility = \"ess\" needs a Kafka broker ([kafka] broker / AMORE_BROKER)")
            return []
        if not ctx.broker_reachable:
            log.error("Kafka broker %s not reachable: no ESS runs until it is (restart)",
                      ctx.broker)
            return []
        from backend.facilities.ess.source import EssFileWriterSource
        source = EssFileWriterSource(ctx.config, ctx.settings, ctx.proposal, ctx.db_id,
                                     on_problem=ctx.reporter("ess"))
        if not source.wait_ready(float(ctx.config["kafka"]["join_timeout"])):
            log.warning("Kafka consumer group not joined yet; events may be delayed")
        log.info("Listening for ESS file writer messages on %s (topics %s)", ctx.broker,
                 ", ".join(source.topics))
        return [source]

    def worker_settings(self, config) -> dict:
        """The file open retries (``open_retries``, ``open_retry_seconds``)."""
        s = self.settings(config)
        return {"attributo_config": "",
                "options": {k: s[k] for k in ("open_retries", "open_retry_seconds")}}

    def amore_toml(self, proposal, root: str | None = None) -> str:
        return "\n".join([
            "[kafka]", "# broker = \"host:9092\"    # or AMORE_BROKER", "",
            "[ess]", 'topics = ["ymir_filewriter"]',
            "run_number_pattern = '_(\\d+)\\.(?:hdf|nxs|h5)$'",
            "# file_root = \"\"   # directory relative file names are under", "",
            "# [columns.temperature]", '# hdf5 = "/entry/sample/temperature"',
            '# type = "number"', '# reduce = "mean"']) + "\n"

    def demo(self):
        from backend.facilities.ess.demo import EssDemo
        return EssDemo()


FACILITY = Ess()
