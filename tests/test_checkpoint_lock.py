"""The trainer lock (utility/checkpoints/lock.py, issue 16): one trainer per model directory,
a dead holder's lock taken over."""
import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest

from conftest import REPO_ROOT, Log
from utility.checkpoints import lock as checkpoint_lock

HOLDER = textwrap.dedent('''
    import signal, sys, time
    sys.path.insert(0, %r)
    from utility.checkpoints import lock as checkpoint_lock
    signal.signal(signal.SIGTERM, lambda *args: sys.exit(0))  # a driver's graceful stop
    with checkpoint_lock.ModelDirLock(sys.argv[1]):
        print('locked', flush=True)
        time.sleep(120)
''' % REPO_ROOT)


def start_holder(directory):
    proc = subprocess.Popen([sys.executable, '-c', HOLDER, directory], stdout=subprocess.PIPE,
                            text=True, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3'))
    assert proc.stdout.readline().strip() == 'locked'
    return proc


@pytest.mark.slow
def test_second_trainer_is_refused_and_a_dead_holders_lock_is_taken_over(tmp_path):
    directory = str(tmp_path / 'model')
    lock_path = os.path.join(directory, 'train.lock')
    holder = start_holder(directory)
    try:
        with pytest.raises(ValueError) as info:
            with checkpoint_lock.ModelDirLock(directory):
                pytest.fail('a second trainer got the lock')
        message = str(info.value)
        assert message.startswith('Another training (pid %d on host ' % holder.pid)
        assert ('is using --model_dir %s; wait for it to finish or stop it, or pass another '
                '--model_dir (delete %s only if that process is gone).'
                % (directory, lock_path)) in message
        assert '\n' not in message and os.path.exists(lock_path)   # the holder's lock stays
        # SIGTERM stops the holder through its `with` block: the lock goes with it.
        holder.send_signal(signal.SIGTERM)
        assert holder.wait(timeout=30) == 0
        assert not os.path.exists(lock_path)
        # A holder killed outright leaves its lock behind; the next trainer takes it over.
        holder = start_holder(directory)
        holder.kill()
        holder.wait(timeout=30)
        assert json.load(open(lock_path))['pid'] == holder.pid
        log = Log()
        with checkpoint_lock.ModelDirLock(directory, log=log):
            mine = json.load(open(lock_path))
            assert mine['pid'] == os.getpid()
        assert len(log) == 1 and log[0].startswith(
            'Taking over the lock %s of pid %d (host ' % (lock_path, holder.pid))
        assert log[0].endswith('that process is no longer running.')
        assert not os.path.exists(lock_path)
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()


def test_lock_of_a_reused_pid_is_stale_and_our_own_is_refused(tmp_path):
    directory = str(tmp_path / 'model')
    os.makedirs(directory)
    lock_path = os.path.join(directory, 'train.lock')
    # The pid is alive (this process) but started at another time: a reused pid.
    with open(lock_path, 'w') as f:
        json.dump({'pid': os.getpid(), 'host': os.uname().nodename, 'started': 'then',
                   'process_start': -5, 'token': 'x'}, f)
    if not os.path.exists('/proc/self/stat'):
        pytest.skip('no /proc on this system: process start times are unknown')
    # decided from /proc itself, so a broken reader fails here instead of skipping
    assert (isinstance(checkpoint_lock._process_start(os.getpid()), int)
            and checkpoint_lock._process_start(os.getpid()) > 0)
    log = Log()
    lock = checkpoint_lock.ModelDirLock(directory, log=log).acquire()
    assert 'no longer running' in log[0]
    with pytest.raises(ValueError, match=r'^Another training \(this process, started '):
        checkpoint_lock.ModelDirLock(directory).acquire()
    lock.release()
    assert not os.path.exists(lock_path)


def test_model_dir_that_is_a_file_is_one_line_error(tmp_path):
    path = tmp_path / 'oops'
    path.write_text('x')
    with pytest.raises(ValueError, match=r'^--model_dir .*oops is a file, not a folder; '):
        checkpoint_lock.ModelDirLock(str(path)).acquire()
