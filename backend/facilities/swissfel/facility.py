"""SwissFEL (sf_daq_broker): every accepted acquisition request is saved as JSON under the pgroup
directory (the proposal, e.g. ``p18493``); a run is its request(s) and data files, checked pulse id
by pulse id."""
from __future__ import annotations

from pathlib import Path

from backend.facilities import Facility, SourceContext, toml_str


class SwissFEL(Facility):
    name = "swissfel"
    defaults = {
        # The pgroup directory, e.g. /sf/alvra/data/p18493 (raw/run_info/ and raw/run*/meta below).
        "root": "",
        "rescan_seconds": 30.0,
        "quiet_seconds": 0.5,
        # Where 'amore-proto gui p18493' looks (site configuration): the context directory of a
        # pgroup is <data_root>/<beamline>/data/<pgroup>/res/amore.
        "data_root": "/sf",
    }

    def run_sources(self, ctx: SourceContext) -> list:
        """Every acquisition request JSON under ``swissfel.root``; none without a root."""
        from backend.facilities.swissfel.source import SwissfelRequestSource
        return SwissfelRequestSource.configured(self.name, ctx.settings, ctx.proposal,
                                                ctx.reporter("swissfel"), "the pgroup directory")

    def check_run(self, run_dir: Path, rules, max_gaps: int) -> dict:
        """Every acquisition of a run directory against its request (current layout)."""
        from backend.facilities.swissfel.check import check_swissfel_run
        return check_swissfel_run(run_dir, rules, max_gaps)

    def amore_toml(self, proposal, root: str | None = None) -> str:
        return "\n".join([
            "[swissfel]", f"root = {toml_str(root or f'/sf/BEAMLINE/data/{proposal}')}",
            "", "# [columns.rate]", '# key = "rate_multiplicator"', '# type = "integer"']) + "\n"

    def context_dir_glob(self, config, proposal) -> tuple[Path, str]:
        return (Path(self.settings(config)["data_root"]), f"*/data/{proposal}/res/amore")

    def demo(self):
        from backend.facilities.swissfel.demo import SwissfelDemo
        return SwissfelDemo()


FACILITY = SwissFEL()
