"""The README's main job: `python -m powpow demo` really serves and echoes, then exits cleanly."""
import re
import signal
import subprocess
import sys
import time


def test_demo_runs_echoes_and_exits_cleanly():
    proc = subprocess.run([sys.executable, "-m", "powpow", "demo", "--seconds", "1", "--clients", "4"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    rates = [int(m) for m in re.findall(r"(\d+) echoes/s", proc.stdout)]
    assert rates and rates[0] > 100, proc.stdout
    assert "done:" in proc.stdout


def test_demo_stops_on_sigint():
    proc = subprocess.Popen([sys.executable, "-m", "powpow", "--seconds", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert "TCP echo on 127.0.0.1:" in line
        time.sleep(0.3)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert "signal %d: stopping" % signal.SIGINT in out
    assert "done:" in out and "Traceback" not in err
