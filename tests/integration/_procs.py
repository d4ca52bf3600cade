"""Servers run as real processes in their own process group (``start_new_session=True``)."""
import os
import signal
import subprocess


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def finish(p) -> None:
    """Whatever is left of the server's process group is killed; the server reaped."""
    if group_alive(p.pid):
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    p.wait(10)
    p.stdout.close()
    p.stderr.close()


def stop_and_read_log(p) -> str:
    """SIGTERM the server, then its stderr as text (``""`` if it did not end in 10 s); reaped."""
    p.terminate()
    try:
        log = p.communicate(timeout=10)[1].decode()
    except subprocess.TimeoutExpired:
        log = ""
    finish(p)
    return log
