"""Extras on the loop: ``FileWatcher`` (inotify / polling) and ``RateLimiter`` (true sliding window)."""
from .filewatch import Change, FileEvent, FileWatcher
from .ratelimit import RateLimiter

__all__ = ["Change", "FileEvent", "FileWatcher", "RateLimiter"]
