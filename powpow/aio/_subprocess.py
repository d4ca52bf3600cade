"""Subprocesses for ``powpow.aio``: asyncio's unix subprocess transport, reaped on the loop.

The process and its pipes are asyncio's ``_UnixSubprocessTransport`` (its pipe
transports run on this loop through ``_add_reader``/``_add_writer``).  The exit
is watched without a global child watcher: a pidfd registered with the loop
(Linux 5.3+, like asyncio's ``PidfdChildWatcher``), else one waiting thread per
child that reports back with ``call_soon_threadsafe``.  Either way the reaping
``waitpid`` targets only that pid, so other children of the process are left
alone.  A loop closed before its children exit closes their pidfds and hands
the pids to waiting threads (``release_child_watchers``), which reap them
whenever they exit -- as 3.11's ``ThreadedChildWatcher`` reaps regardless of
the loop: no pidfd leaks and no zombie, even if the ``Process`` is kept.
"""
import os
import threading
from asyncio import unix_events

__all__ = ["make_subprocess_transport", "release_child_watchers"]


def _exitcode(status: int) -> int:
    try:
        return os.waitstatus_to_exitcode(status)
    except (AttributeError, ValueError):  # pragma: no cover - very old Python
        if os.WIFSIGNALED(status):
            return -os.WTERMSIG(status)
        return os.WEXITSTATUS(status)


def _reap(pid: int):
    try:
        _, status = os.waitpid(pid, 0)
    except ChildProcessError:
        return 255  # reaped by someone else: asyncio reports 255 too
    return _exitcode(status)


def _watch(loop, pid: int, transp) -> None:
    pidfd_open = getattr(os, "pidfd_open", None)
    fd = -1
    if pidfd_open is not None:
        try:
            fd = pidfd_open(pid)
        except OSError:
            fd = -1
    if fd >= 0:
        def exited() -> None:
            if loop._child_pidfds.pop(pid, None) is None:
                return  # (released by the loop's close meanwhile)
            loop._remove_reader(fd)
            os.close(fd)
            transp._process_exited(_reap(pid))

        try:
            loop._add_reader(fd, exited)
        except BaseException:
            os.close(fd)
            raise
        loop._child_pidfds[pid] = fd
        return

    def wait() -> None:
        code = _reap(pid)
        try:
            loop.call_soon_threadsafe(transp._process_exited, code)
        except RuntimeError:
            pass  # loop closed meanwhile

    _reap_in_thread(pid, wait)


def _reap_in_thread(pid: int, target) -> None:
    threading.Thread(target=target, name="powpow-waitpid-%d" % pid, daemon=True).start()


def release_child_watchers(loop) -> None:
    """``EventLoop.close()``, after it unregistered every fd: close the pidfds of the children still
    running and reap those in waiting threads (nobody is told the exit code: the loop is gone)."""
    watched = loop._child_pidfds
    loop._child_pidfds = {}
    for pid, fd in watched.items():
        os.close(fd)
        _reap_in_thread(pid, lambda pid=pid: _reap(pid))


async def make_subprocess_transport(loop, protocol, args, shell, stdin, stdout, stderr, bufsize, extra, **kwargs):
    waiter = loop.create_future()
    transp = unix_events._UnixSubprocessTransport(loop, protocol, args, shell, stdin, stdout, stderr, bufsize,
                                                  waiter=waiter, extra=extra, **kwargs)
    _watch(loop, transp.get_pid(), transp)
    try:
        await waiter
    except (SystemExit, KeyboardInterrupt):
        raise
    except BaseException:
        transp.close()
        await transp._wait()
        raise
    return transp
