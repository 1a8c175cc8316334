"""Context-file reload: the listener's follow-up that loads the context file again when it
changes (or when manual columns were added, renamed or removed: context files may read them),
says in the event log when it breaks and when it is fixed, and then queues the runs that waited
for it."""
from __future__ import annotations

import logging
import threading
from typing import Callable

from backend.contextdir import ContextDir
from backend.processing.runpath import RunProcessor

log = logging.getLogger(__name__)


class ContextReload:
    """Reloads the context file of ``processor``'s directory in a worker when it changed.

    ``report``: the event log (:meth:`backend.service.listener.Listener.report`);
    ``requeue_waiting()``: queue the runs waiting for a working context file, returns how many
    (:meth:`backend.service.catchup.CatchUp.requeue_pending`)."""

    def __init__(self, processor: RunProcessor, report: Callable[..., None],
                 requeue_waiting: Callable[[], int]):
        self.processor = processor
        self.report = report
        self.requeue_waiting = requeue_waiting
        self.context_file = ContextDir(processor.context_dir).context_file
        self._mtime = None
        self._reloading = threading.Event()
        self._force = False

    def force(self) -> None:
        """Reload at the next :meth:`check` even if the file did not change."""
        self._force = True

    def _file_mtime(self):
        try:
            return self.context_file.stat().st_mtime
        except FileNotFoundError:
            return None

    def check(self, wait: bool = False) -> None:
        """(Re)load the context file if it changed. The load borrows a worker, which may be busy
        with a long run, so the main loop does not wait for it (``wait=False``): the loop must
        keep writing the status heartbeat."""
        mtime = self._file_mtime()
        if (mtime == self._mtime and not self._force) or self._reloading.is_set():
            return
        self._force = False
        first = self._mtime is None
        self._mtime = mtime
        self._reloading.set()
        if wait:
            self._reload(first)
        else:
            threading.Thread(target=self._reload, args=(first,), name="context-reload",
                             daemon=True).start()

    def _reload(self, first: bool) -> None:
        try:
            was_broken = self.processor.context_error is not None
            err = self.processor.load_context()
            if err:
                log.error("Context file is broken; runs are recorded and will be processed once "
                          "it is fixed:\n%s", err)
                if not was_broken:
                    self.report("error", "Context file is broken; runs are recorded and "
                                "processed once it is fixed", {"error": err}, source="context",
                                log_it=False)
            else:
                if was_broken:
                    self.report("info", "Context file fixed", source="context")
                log.info("Context file %s: %d variables", "loaded" if first else "reloaded",
                         len(self.processor.variables))
                if was_broken and not first:
                    n = self.requeue_waiting()
                    if n:
                        log.info("Context file fixed: processing %d waiting run(s)", n)
        except Exception:
            log.exception("Reloading the context file failed")
        finally:
            self._reloading.clear()
