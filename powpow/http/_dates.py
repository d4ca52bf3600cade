"""IMF-fixdate formatting (RFC 9110 §5.6.7), without ``email.utils``.

The ``Date`` header of every response and ``Last-Modified`` of static files
are written here.  ``email.utils.formatdate(t, usegmt=True)`` gives the same
text for whole seconds, but importing it pulls ``email``, ``random``,
``calendar``, ``locale``... (~10 ms); ``time.gmtime`` and two tables do the job.
The names are English whatever the locale (``strftime("%a")`` would not be).
"""
import time

__all__ = ["http_date"]

DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun",
          "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def http_date(seconds: float) -> str:
    """IMF-fixdate (RFC 9110 §5.6.7), e.g. ``Sun, 06 Nov 1994 08:49:37 GMT``."""
    t = time.gmtime(seconds)
    return "%s, %02d %s %04d %02d:%02d:%02d GMT" % (
        DAYS[t.tm_wday], t.tm_mday, MONTHS[t.tm_mon - 1], t.tm_year,
        t.tm_hour, t.tm_min, t.tm_sec)
