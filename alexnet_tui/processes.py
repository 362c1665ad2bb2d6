"""Helper processes (loader workers, the scan's pool) and the stop signals: the main process owns the stop."""

from __future__ import annotations

import signal

STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))


def ignore_stop_signals(_worker_id: int | None = None) -> None:
    """For loader workers and process pools. Ctrl+C and `kill -- -PGID` signal the whole process
    group: the main process owns the stop (it finishes the batch and saves), so its helpers must
    not die of the signal and take the batch in flight with them."""
    for number in STOP_SIGNALS:
        signal.signal(number, signal.SIG_IGN)


def start_worker_processes() -> None:
    """Start multiprocessing's resource tracker and fork server with the stop signals blocked, so
    they and every loader worker forked from the server inherit the block (a worker that gets a
    signal before its worker_init_fn has run is covered too). The fork server matters most: torch's
    loader workers are its children and exit when it dies, as if the main process had. Called
    before any loader or pool exists; in the TUI also before Textual swaps sys.stderr, which these
    helpers must not inherit."""
    from multiprocessing import forkserver, resource_tracker

    # Workers fork from a server that has imported torch and the datasets once, instead of each
    # importing them anew (seconds per worker on a small machine, for every loader).
    forkserver.set_forkserver_preload(["alexnet_tui.data.images"])
    # One at a time: the tracker's own start unblocks SIGINT and SIGTERM in this thread when it is
    # done, and the fork server's start begins by starting the tracker if it is not running yet.
    for start in (resource_tracker.ensure_running, forkserver.ensure_running):
        previous = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        try:
            start()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, previous)
