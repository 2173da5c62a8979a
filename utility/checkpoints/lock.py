"""The trainer lock: one trainer at a time per model directory.

`ModelDirLock(model_dir)` is a context manager holding `<model_dir>/train.lock` while a trainer
runs; a second trainer is refused with a ValueError naming the holder, and a lock left by a
dead process is taken over with a notice. Nothing reads flags; nothing acts at import.
"""
import datetime
import json
import os
import socket
import uuid

from common.console import notify as _log

LOCK_NAME = 'train.lock'
_STALE_EMPTY_LOCK_SECS = 30.0


def _process_start(pid):
    """The start time of process `pid` in clock ticks since boot (Linux), or None."""
    try:
        with open('/proc/%d/stat' % pid, 'r') as f:
            stat = f.read()
        return int(stat.rsplit(')', 1)[1].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def _pid_alive(pid, start=None):
    """Whether process `pid` runs on this host (and, when `start` is known, is the same
    process, not a later one that reuses the pid)."""
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # alive, owned by another user
    except OSError:
        return False
    if start is not None:
        now = _process_start(pid)
        if now is not None and now != start:
            return False
    return True


class ModelDirLock:
    """Holds `<model_dir>/train.lock` while a trainer runs (a context manager).

    The lock file is created atomically (O_CREAT | O_EXCL) and holds JSON with the pid,
    host, start time and a token. A second trainer on the same directory gets a ValueError
    naming the holder; a lock whose process no longer runs on this host (killed with
    SIGKILL, machine rebooted) is taken over with a notice. A lock held from another host
    cannot be checked and is always respected. The file is removed on exit, including
    when the driver stops on SIGTERM/SIGINT by raising or returning through the `with`.

    Args:
      model_dir: the model directory (created if missing). Remote paths (gs://, s3://,
        hdfs://) are not locked; a notice says so.
      log: callable for notices (None: silent).
    """

    def __init__(self, model_dir, log=None):
        self.model_dir = model_dir
        self.path = os.path.join(model_dir, LOCK_NAME)
        self.log = log
        self.token = None

    # Public API.
    def acquire(self):
        """Takes the lock or raises ValueError (one line naming the holder's pid)."""
        if '://' in self.model_dir:
            _log(self.log, 'Not locking %s: lock files work on local and NFS folders only; '
                           'make sure no other trainer uses it.' % self.model_dir)
            return self
        if os.path.exists(self.model_dir) and not os.path.isdir(self.model_dir):
            raise ValueError('--model_dir %s is a file, not a folder; pass a folder path.'
                             % self.model_dir)
        os.makedirs(self.model_dir, exist_ok=True)
        for _ in range(5):
            if self._try_create():
                return self
            holder, raw = self._read()
            if not self._is_stale(holder, raw):
                raise ValueError(self._held_message(holder))
            self._take_over(raw, holder)
        raise ValueError('Could not take %s: other trainers keep replacing it; start one '
                         'trainer per --model_dir.' % self.path)

    def release(self):
        """Removes the lock file if it is still ours."""
        if self.token is None:
            return
        holder, _raw = self._read()
        if holder is not None and holder.get('token') == self.token:
            try:
                os.remove(self.path)
            except FileNotFoundError:
                pass
        self.token = None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc_info):
        self.release()
        return False

    # Internals.
    def _try_create(self):
        token = uuid.uuid4().hex
        record = {'pid': os.getpid(), 'host': socket.gethostname(),
                  'started': datetime.datetime.now().isoformat(timespec='seconds'),
                  'process_start': _process_start(os.getpid()), 'token': token}
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, 'w') as f:
            json.dump(record, f)
            f.write('\n')
            f.flush()
            os.fsync(f.fileno())
        self.token = token
        return True

    def _read(self):
        """(holder dict or None, raw text or None when the file is gone)."""
        try:
            with open(self.path, 'r') as f:
                raw = f.read()
        except FileNotFoundError:
            return None, None
        try:
            holder = json.loads(raw)
        except ValueError:
            return None, raw
        return (holder if isinstance(holder, dict) else None), raw

    def _is_stale(self, holder, raw):
        if raw is None:
            return True  # released meanwhile: just try again
        if holder is None:  # empty or garbled: a trainer may be writing it right now
            try:
                age = datetime.datetime.now().timestamp() - os.path.getmtime(self.path)
            except OSError:
                return True
            return age > _STALE_EMPTY_LOCK_SECS
        if holder.get('host') != socket.gethostname():
            return False
        return not _pid_alive(holder.get('pid'), holder.get('process_start'))

    def _take_over(self, raw, holder):
        if raw is None:
            return
        aside = '%s.stale-%s' % (self.path, uuid.uuid4().hex)
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            return
        with open(aside, 'r') as f:
            moved = f.read()
        if moved != raw:  # another trainer replaced it in between: give it back
            try:
                os.link(aside, self.path)
            except OSError:
                pass
            os.remove(aside)
            return
        os.remove(aside)
        if holder is None:
            _log(self.log, 'Removed the unreadable lock file %s (older than %d s).'
                 % (self.path, _STALE_EMPTY_LOCK_SECS))
        else:
            _log(self.log, 'Taking over the lock %s of pid %s (host %s, started %s): that '
                           'process is no longer running.'
                 % (self.path, holder.get('pid'), holder.get('host'), holder.get('started')))

    def _held_message(self, holder):
        if holder is None:
            return ('Another trainer is starting in %s (%s is being written); wait for it or '
                    'use another --model_dir.' % (self.model_dir, self.path))
        where = ('this process' if holder.get('pid') == os.getpid()
                 and holder.get('host') == socket.gethostname() else
                 'pid %s on host %s' % (holder.get('pid'), holder.get('host')))
        return ('Another training (%s, started %s) is using --model_dir %s; wait for it to '
                'finish or stop it, or pass another --model_dir (delete %s only if that '
                'process is gone).' % (where, holder.get('started'), self.model_dir,
                                       self.path))
