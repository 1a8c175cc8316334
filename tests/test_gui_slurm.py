"""The GUI with a real one-node Slurm cluster: a run's job state in its row, the job's log and
Cancel in the run's Slurm dialog, and the Reprocess dialog's Slurm choice."""
import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from qtpy.QtCore import Qt  # noqa: E402

from amore_gui.application.table_data import C_STATUS  # noqa: E402
from backend.store.writer import RunDB  # noqa: E402
from tests.gui_fixtures import GUI_PROPOSAL  # noqa: E402
from tests.gui_helpers import WAIT, cell, qtbot_wait_until  # noqa: E402


def slurm_toml(gui_ctx, slurm, extra=""):
    return (f'[data]\nroot = "{gui_ctx["root"]}"\n\n[processing]\njobs = 2\n\n'
            f'[slurm]\nenabled = true\npartition = "{slurm.partition}"\ntime = "00:10:00"\n'
            f'max_concurrent = 2\npoll_seconds = 0.3\n{extra}')


def test_run_row_shows_its_job_and_the_dialog_shows_log_and_cancels(open_window, gui_ctx,
                                                                      slurm, tmp_path):
    from backend.config import load_config
    from backend.processing.slurm import SlurmExecutor
    ctx = gui_ctx["ctx"]
    # a real job that waits in the queue for an hour (--begin), then one that runs and ends
    (ctx / "amore.toml").write_text(slurm_toml(gui_ctx, slurm, 'extra_args = ["--begin=now+3600"]\n'))
    ex = SlurmExecutor(ctx, load_config(ctx), RunDB(ctx))
    job = ex.submit(GUI_PROPOSAL, [3], ["n_trains"], "all")
    ex.poll()
    w = open_window()
    qtbot_wait_until(lambda: f"Slurm job {job} pending" in (cell(w, 3, C_STATUS, Qt.ToolTipRole) or ""),
                     timeout=WAIT, what=f"run 3's status says job {job} pending",
                     seen=lambda: (cell(w, 3, C_STATUS, Qt.ToolTipRole), RunDB(ctx).slurm_tasks()))
    assert cell(w, 3, C_STATUS) == f"pending (job {job})"  # the row says what its job does
    w.grab().save(str(tmp_path / "main-window-job-pending.png"))
    dlg = w.open_slurm_jobs(GUI_PROPOSAL, 3)
    qtbot_wait_until(lambda: dlg.jobs.count() == 1 and "no log yet" in dlg.log.toPlainText(),
                     what="the dialog lists the job, no log yet",
                     seen=lambda: ([dlg.jobs.item(i).text() for i in range(dlg.jobs.count())],
                                   dlg.log.toPlainText()[-300:]))
    assert dlg.jobs.item(0).text().startswith(f"{job}  PENDING") and "n_trains" in dlg.jobs.item(0).text()
    assert dlg.cancel_btn.isEnabled()
    dlg.grab().save(str(tmp_path / "slurm-dialog.png"))
    dlg.cancel_jobs()
    qtbot_wait_until(lambda: dlg.proc is None and dlg.jobs.count() == 1
                     and "CANCELLED" in dlg.jobs.item(0).text(), timeout=60000,
                     what="the cancel command ended and the dialog lists the job CANCELLED",
                     seen=lambda: (dlg.proc, [dlg.jobs.item(i).text() for i in range(dlg.jobs.count())],
                                   dlg.summary.text()))
    assert f"Cancelled {job}" in dlg.summary.text()
    assert not dlg.cancel_btn.isEnabled()
    qtbot_wait_until(lambda: "ended CANCELLED" in (cell(w, 3, "n_trains", Qt.ToolTipRole) or ""),
                     timeout=WAIT, what="run 3's n_trains shows the job's end",
                     seen=lambda: (cell(w, 3, "n_trains", Qt.ToolTipRole), w.live.source_label.text(),
                                   RunDB(ctx).slurm_tasks()))
    # the row's status follows (the run's status is written just after its values)
    qtbot_wait_until(lambda: "Slurm job" not in (cell(w, 3, C_STATUS, Qt.ToolTipRole) or ""),
                     timeout=WAIT, what="run 3's status no longer says its job (not 'processing')",
                     seen=lambda: cell(w, 3, C_STATUS, Qt.ToolTipRole))
    dlg.close()


def test_reprocess_dialog_submits_to_slurm(open_window, gui_ctx, slurm):
    from backend.testing.mockdata import write_run
    ctx = gui_ctx["ctx"]
    (ctx / "amore.toml").write_text(slurm_toml(gui_ctx, slurm))
    write_run(gui_ctx["pdir"], GUI_PROPOSAL, 3, ntrains=70, seed=7)
    w = open_window()
    w.jump_to_run(3)
    dlg = w.open_reprocess(selected=True)
    assert dlg.rb_slurm.isEnabled()
    dlg.rb_slurm.setChecked(True)
    for i in range(dlg.vars.count()):
        it = dlg.vars.item(i)
        it.setCheckState(Qt.Checked if it.data(Qt.UserRole) == "n_trains" else Qt.Unchecked)
    codes = []
    dlg.finished_job.connect(codes.append)
    dlg.start()
    qtbot_wait_until(lambda: codes, timeout=120000, what="the reprocess command ended",
                     seen=lambda: dlg.log.toPlainText()[-1000:])
    assert codes == [0], dlg.log.toPlainText()
    assert "--slurm" in dlg.log.toPlainText() and "Submitted Slurm array job" in dlg.log.toPlainText()
    assert dlg.progress.value() == 1
    qtbot_wait_until(lambda: cell(w, 3, "n_trains") == "70", what="run 3's n_trains is 70",
                     seen=lambda: (cell(w, 3, "n_trains"), cell(w, 3, "n_trains", Qt.ToolTipRole),
                                   w.live.source_label.text()))
    assert RunDB(ctx).slurm_tasks()[0]["state"] == "COMPLETED"
    dlg.close()
