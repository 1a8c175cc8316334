"""Context templates of other facilities (ESS, ESRF, SwissFEL), for ``amore-proto init --facility``."""
