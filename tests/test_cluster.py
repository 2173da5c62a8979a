"""utility/training/cluster.py (TF_CONFIG parsing, lost-worker messages) and the per-worker data
shards."""
import json
import os

import pytest
import tensorflow as tf

from utility.training import cluster as cluster_lib

TWO = {'cluster': {'worker': ['10.0.0.1:2222', '10.0.0.2:2222']},
       'task': {'type': 'worker', 'index': 1}}


def parse(config):
    return cluster_lib.parse_tf_config(config if isinstance(config, str) else json.dumps(config))


def test_no_tf_config_means_one_machine():
    assert cluster_lib.parse_tf_config(None) is None
    assert cluster_lib.parse_tf_config('  ') is None
    assert parse({}) is None
    assert cluster_lib.from_environment({}) is None


def test_two_workers():
    c = parse(TWO)
    assert (c.task_type, c.task_index, c.worker_index, c.num_workers) == ('worker', 1, 1, 2)
    assert not c.is_chief and c.address == '10.0.0.2:2222'
    assert parse(dict(TWO, task={'type': 'worker', 'index': 0})).is_chief
    assert c.describe_task('worker', 0) == 'worker 0 (/job:worker/task:0 at 10.0.0.1:2222)'
    assert cluster_lib.from_environment({'TF_CONFIG': json.dumps(TWO)}) == c


def test_a_chief_job_is_worker_zero():
    config = {'cluster': {'chief': ['c:1'], 'worker': ['w0:1', 'w1:1']},
              'task': {'type': 'worker', 'index': 0}}
    c = parse(config)
    assert (c.worker_index, c.num_workers, c.is_chief) == (1, 3, False)
    chief = parse(dict(config, task={'type': 'chief', 'index': 0}))
    assert chief.is_chief and chief.worker_index == 0
    assert [t[:3] for t in c.tasks()] == [(0, 'chief', 0), (1, 'worker', 0), (2, 'worker', 1)]


@pytest.mark.parametrize('text, expected', [
    ('{"cluster": ', 'TF_CONFIG is not valid JSON (Expecting value at line 1 column 13)'),
    ('[1, 2]', 'must be a JSON object'),
    ('{"cluster": {"worker": ["a:1", "b:2"]}}', 'has a "cluster" but no "task"'),
    ('{"task": {"type": "worker", "index": 0}}', 'has a "task" but no "cluster"'),
    ('{"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 2}}',
     'task index 2 is out of range: job \'worker\' has 2 task(s), indices 0..1'),
    ('{"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": -1}}',
     'task index -1 is out of range'),
    ('{"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": "1"}}',
     "task index '1' is not an integer"),
    ('{"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "chief", "index": 0}}',
     "task type 'chief' is not a job of its cluster (worker)"),
    ('{"cluster": {"worker": ["a:1", "b:2"]}, "task": {"index": 0}}',
     '"task" must be {"type": "worker", "index": N}'),
    ('{"cluster": {"worker": ["a:1"], "ps": ["p:1"]}, "task": {"type": "worker", "index": 0}}',
     "has job(s) 'ps', which multi-worker training does not use"),
    ('{"cluster": {"worker": ["a:1", "a:1"]}, "task": {"type": "worker", "index": 0}}',
     'gives address a:1 twice'),
    ('{"cluster": {"worker": ["a"]}, "task": {"type": "worker", "index": 0}}',
     'has address \'a\', not "host:port"'),
    ('{"cluster": {"worker": []}, "task": {"type": "worker", "index": 0}}',
     'must be a non-empty list'),
    ('{"cluster": {"chief": ["a:1", "b:1"]}, "task": {"type": "chief", "index": 0}}',
     'has 2 "chief" tasks'),
    ('{"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", "index": 0}, "x": 1}',
     "has unknown key(s) 'x'"),
])
def test_bad_tf_config_is_one_line_naming_problem_and_fix(text, expected):
    with pytest.raises(ValueError) as info:
        cluster_lib.parse_tf_config(text)
    message = str(info.value)
    assert '\n' not in message
    assert message.startswith('TF_CONFIG ') and expected in message, message
    assert 'set it on every machine' in message and '"task": {"type": "worker"' in message


def test_lost_worker_is_named_from_the_error_or_is_every_other_worker():
    c = parse(dict(TWO, task={'type': 'worker', 'index': 0}))
    assert cluster_lib.lost_workers(c, 'Operation timed out.') == [
        'worker 1 (/job:worker/task:1 at 10.0.0.2:2222)']
    three = parse({'cluster': {'worker': ['h0:1', 'h1:1', 'h2:1']},
                   'task': {'type': 'worker', 'index': 0}})
    assert cluster_lib.lost_workers(
        three, 'from /job:worker/replica:0/task:0 ... call to /job:worker/replica:0/task:2') == [
        'worker 2 (/job:worker/task:2 at h2:1)']
    assert cluster_lib.lost_workers(three, 'ipv4:h1:1: Failed to connect') == [
        'worker 1 (/job:worker/task:1 at h1:1)']
    assert len(cluster_lib.lost_workers(three, 'no names')) == 2
    line = cluster_lib.describe_lost_worker(c, 'Graph execution error:\n\nOperation timed out.',
                                            600)
    assert '\n' not in line
    assert line.startswith('Training stopped on worker 0 (/job:worker/task:0 at 10.0.0.1:2222): '
                           'lost contact with worker 1 (/job:worker/task:1 at 10.0.0.2:2222)')
    assert '600 s' in line and 'Graph execution error:' in line


def test_peer_failures_are_told_from_other_errors():
    assert cluster_lib.is_peer_failure(tf.errors.DeadlineExceededError(None, None, 'x'))
    assert cluster_lib.is_peer_failure(tf.errors.UnavailableError(None, None, 'x'))
    assert cluster_lib.is_peer_failure(
        tf.errors.InternalError(None, None, 'Collective ops is aborted by: ...'))
    assert not cluster_lib.is_peer_failure(tf.errors.InvalidArgumentError(None, None, 'x'))
    assert not cluster_lib.is_peer_failure(tf.errors.InternalError(None, None, 'x'))
    assert not cluster_lib.is_peer_failure(ValueError('x'))


def _names(dataset):
    names = []
    with tf.Graph().as_default():
        batch = tf.compat.v1.data.make_one_shot_iterator(dataset()).get_next()
        with tf.compat.v1.Session() as sess:
            while True:
                try:
                    names.extend(n.decode() for n in sess.run(batch['filename']))
                except tf.errors.OutOfRangeError:
                    return names


@pytest.mark.parametrize('num_shards', [2, 3])
def test_workers_read_disjoint_parts_that_cover_the_data(tfrecord_dir, num_shards):
    """2 train files: 2 workers get one file each; 3 workers share records deterministically."""
    from dataset.pipeline import build_dataset
    pattern = os.path.join(tfrecord_dir, 'train-*')

    def reader(index, shards):
        return lambda: build_dataset(pattern, None, batch_size=1, is_training=True, seed=3,
                                     num_epochs=1, num_shards=shards, shard_index=index)

    everything = _names(reader(0, 1))
    parts = [_names(reader(i, num_shards)) for i in range(num_shards)]
    assert all(parts)
    assert sorted(sum(parts, [])) == sorted(everything)   # disjoint and complete
    assert parts == [_names(reader(i, num_shards)) for i in range(num_shards)]  # deterministic
    with pytest.raises(ValueError, match='shard_index 2 is not in 0..1'):
        build_dataset(pattern, None, 1, True, num_shards=2, shard_index=2)


def test_silent_peers_tells_a_missing_worker_from_another_program_and_a_live_one():
    """Start-up waits on a peer only while it does not answer as a TensorFlow worker."""
    import socket
    sockets = [socket.socket() for _ in range(3)]
    for s in sockets:
        s.bind(('127.0.0.1', 0))
    ports = [s.getsockname()[1] for s in sockets]
    other_program = sockets[1]
    other_program.listen(1)                    # listens, never speaks HTTP/2
    sockets[0].close()
    sockets[2].close()                         # nothing at ports[2]
    live = tf.distribute.Server(tf.train.ClusterSpec({'worker': ['127.0.0.1:%d' % ports[0]]}),
                                job_name='worker', task_index=0, start=True)
    config = json.dumps({'cluster': {'worker': ['127.0.0.1:%d' % p for p in
                                                [ports[0], ports[1], ports[2], 1]]},
                         'task': {'type': 'worker', 'index': 3}})
    try:
        silent = cluster_lib.parse_tf_config(config).silent_peers(timeout_secs=1.0)
    finally:
        other_program.close()
        del live
    assert silent == [
        'worker 1 (/job:worker/task:1 at 127.0.0.1:%d) (something answers there, but not a '
        'TensorFlow worker: another program on that port?)' % ports[1],
        'worker 2 (/job:worker/task:2 at 127.0.0.1:%d) (nothing answers at that address)'
        % ports[2]]
