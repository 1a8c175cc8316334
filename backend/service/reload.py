"""Context-file reload: the listener's follow-up that loads the context file again when it
changes -- or a module named in ``[processing] watch_modules`` does, or manual columns were
added, renamed or removed (context files may read them) --, says in the event log when it breaks
and when it is fixed, and then queues the runs that waited for it; with ``[processing]
recompute_on_change``, also the values the change made stale."""
from __future__ import annotations

import logging
import os
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
                 requeue_waiting: Callable[[], int],
                 recompute_stale: Callable[[], int] | None = None):
        self.processor = processor
        self.report = report
        self.requeue_waiting = requeue_waiting
        #: called after a load that changed the recorded code (``[processing]
        #: recompute_on_change``): queue the stale values' recomputation, returns how many runs
        self.recompute_stale = recompute_stale
        self.context_file = ContextDir(processor.context_dir).context_file
        self._mtime = None
        self._reloading = threading.Event()
        self._checking = threading.Lock()   # the main loop and control requests both check
        self._force = False

    def force(self) -> None:
        """Reload at the next :meth:`check` even if the file did not change."""
        self._force = True

    @property
    def reloading(self) -> bool:
        """Whether a load of the context file is under way."""
        return self._reloading.is_set()

    def _file_mtime(self):
        """Modification times of the context file and of the watched modules' files (those
        the last load imported, ``[processing] watch_modules``); None without a context file."""
        try:
            times = [self.context_file.stat().st_mtime]
        except FileNotFoundError:
            return None
        for path in self.processor.watched_files:
            try:
                times.append(os.stat(path).st_mtime)
            except OSError:
                times.append(None)
        return tuple(times)

    def check(self, wait: bool = False) -> None:
        """(Re)load the context file if it changed. The load borrows a worker, which may be busy
        with a long run, so the main loop does not wait for it (``wait=False``): the loop must
        keep writing the status heartbeat. Safe to call from several threads (the main loop, a
        ``reprocess all`` handed over: :mod:`backend.service.control`); one load at a time, a
        call during one returns at once."""
        with self._checking:
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
                if self.processor.code_changed and self.recompute_stale is not None:
                    n = self.recompute_stale()
                    if n:
                        log.info("Context file changed: recomputing the stale values of %d "
                                 "run(s) ([processing] recompute_on_change)", n)
        except Exception:
            log.exception("Reloading the context file failed")
        finally:
            self._reloading.clear()
