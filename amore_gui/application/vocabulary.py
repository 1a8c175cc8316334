"""How each facility names things, for the GUI (no Qt): European XFEL's proposal ``p2832`` and
runs, ESRF's experiment ``mx2532`` and collections, SwissFEL's pgroup ``p18493``, ESS proposals
and file-writer runs."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Vocabulary:
    """Words of one facility: ``proposal`` (what an experiment's identifier is called),
    ``run`` (what one row is), ``run_name`` (the facility's name of a run, shown as a column
    where it has one: the metadata key or ``meta#`` input holding it)."""

    facility: str
    proposal: str
    run: str
    run_name: str | None = None

    def proposal_text(self, proposal) -> str:
        """``p2832`` for European XFEL's numbers, the identifier itself elsewhere."""
        if proposal is None:
            return ""
        if self.facility == "euxfel" and isinstance(proposal, int):
            return f"p{proposal}"
        return str(proposal)


VOCABULARIES = {
    "euxfel": Vocabulary("euxfel", "Proposal", "Run"),
    "ess": Vocabulary("ess", "Proposal", "Run", "run_name"),
    "esrf": Vocabulary("esrf", "Experiment", "Collection", "tag"),
    "swissfel": Vocabulary("swissfel", "pgroup", "Run", "directory_name"),
}


def vocabulary_for(context_dir: str | Path | None) -> Vocabulary:
    """The vocabulary of the facility a context directory serves (``facility`` in its
    amore.toml; European XFEL when unset or unreadable)."""
    if context_dir is None:
        return VOCABULARIES["euxfel"]
    try:
        from backend.config import load_config
        facility = load_config(context_dir).facility
    except Exception:
        facility = "euxfel"
    return VOCABULARIES.get(facility, VOCABULARIES["euxfel"])
