"""ESRF (ID29 and the MX beamlines): each data collection leaves a ``metadata.json`` (MXCuBE)
under the beamtime folder; collections have no run numbers (AMORE numbers them in the database)
and their metadata columns can come from AMARCORD's ``attributo-config.json``."""
from __future__ import annotations

from pathlib import Path

from backend.facilities import Facility, SourceContext, toml_str


class Esrf(Facility):
    name = "esrf"
    defaults = {
        # Folder searched (recursively) for metadata.json files.
        "root": "",
        # AMARCORD's mapping file (JSON list of beamline-name/attributo-name/attributo-type
        # [/attributo-unit]), relative to the context directory. "" = none.
        "attributo_config": "attributo-config.json",
        # Paths found in metadata.json starting with path_prefix are read with that prefix
        # replaced by path_prefix_replacement (data read from another mount).
        "path_prefix": "",
        "path_prefix_replacement": "",
        # Seconds between full rescans (network file systems miss inotify events).
        "rescan_seconds": 30.0,
        # A metadata.json is read once it has not changed for this many seconds.
        "quiet_seconds": 0.5,
        # Where 'amore-proto gui mx2532' looks (site configuration): the context directory of a
        # proposal is <visitor_root>/<proposal>/<beamline>/<session>/PROCESSED_DATA/amore.
        "visitor_root": "/data/visitor",
    }

    def run_sources(self, ctx: SourceContext) -> list:
        """Every ``metadata.json`` under ``esrf.root``; none without a root."""
        from backend.facilities.esrf.source import EsrfMetadataSource
        s = ctx.settings
        return EsrfMetadataSource.configured(
            self.name, s, ctx.proposal, ctx.reporter("esrf"), "the beamtime folder",
            path_prefix=s.get("path_prefix", ""),
            path_prefix_replacement=s.get("path_prefix_replacement", ""))

    def worker_settings(self, config) -> dict:
        """AMARCORD's mapping file (``esrf.attributo_config``) for the metadata columns."""
        return {"attributo_config": self.settings(config).get("attributo_config") or "",
                "options": {}}

    def amore_toml(self, proposal, root: str | None = None) -> str:
        return "\n".join([
            "[esrf]", f"root = {toml_str(root or f'/data/visitor/{proposal}')}",
            'attributo_config = "attributo-config.json"', 'path_prefix = ""',
            'path_prefix_replacement = ""']) + "\n"

    def context_dir_glob(self, config, proposal) -> tuple[Path, str]:
        return (Path(self.settings(config)["visitor_root"]),
                f"{proposal}/*/*/PROCESSED_DATA/amore")

    def demo(self):
        from backend.facilities.esrf.demo import EsrfDemo
        return EsrfDemo()


FACILITY = Esrf()
