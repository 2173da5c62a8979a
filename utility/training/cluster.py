"""Multi-worker training: the cluster described by TF_CONFIG, parsed and checked.

TensorFlow's multi-worker runtime (MultiWorkerMirroredStrategy) reads the standard
`TF_CONFIG` environment variable: the same JSON on every machine except the task:

    {"cluster": {"worker": ["host1:2222", "host2:2222"]},
     "task": {"type": "worker", "index": 0}}

A `chief` job of one task may come first ("cluster": {"chief": [...], "worker": [...]}); it is
then worker 0 of the training and the `worker` tasks are workers 1, 2, ... Without a chief job,
worker 0 is the chief. The chief writes checkpoints, summaries and params.json.

This module only parses and describes (and probes the peers' ports, `silent_peers`); it
imports no TensorFlow and reads no flags. TensorFlow's
own parser accepts many broken configurations and fails later (or hangs); `parse_tf_config`
refuses them first, in one line that names the problem and the fix.
"""
import collections
import json
import re
import socket

# The jobs MultiWorkerMirroredStrategy trains on. 'ps' belongs to ParameterServerStrategy and
# 'evaluator' to tf.estimator.train_and_evaluate's side evaluation: neither is used here.
TRAIN_JOBS = ('chief', 'worker')

EXAMPLE = ('{"cluster": {"worker": ["host1:2222", "host2:2222"]}, '
           '"task": {"type": "worker", "index": 0}}')


class Cluster(collections.namedtuple(
        'Cluster', ['spec', 'task_type', 'task_index', 'worker_index', 'num_workers'])):
    """One worker's view of the cluster.

    Fields:
      spec: {'chief': [address], 'worker': [address, ...]} (jobs present only), addresses as
        in TF_CONFIG ('host:port').
      task_type, task_index: this process's task ('worker', 1).
      worker_index: this worker's place in the training, 0 .. num_workers - 1 (the chief is 0;
        with a chief job, worker task i is worker_index i + 1). It selects the data shard.
      num_workers: chief + worker tasks.
    """
    __slots__ = ()

    @property
    def is_chief(self):
        return self.worker_index == 0

    @property
    def address(self):
        return self.spec[self.task_type][self.task_index]

    def tasks(self):
        """[(worker_index, task_type, task_index, address)] in training order (chief first)."""
        out = []
        for job in TRAIN_JOBS:
            for index, address in enumerate(self.spec.get(job, [])):
                out.append((len(out), job, index, address))
        return out

    def silent_peers(self, timeout_secs=2.0):
        """The other workers that do not answer as a TensorFlow worker now, each as
        'worker 1 (/job:worker/task:1 at host:port) (why)': nothing listens at the address
        (not started, stopped, wrong address), or something listens but does not speak
        gRPC's HTTP/2 (another program holds the port). A worker whose server runs answers,
        even while it still builds its graph."""
        silent = []
        for _, job, index, address in self.tasks():
            if (job, index) == (self.task_type, self.task_index):
                continue
            why = _probe(address, timeout_secs)
            if why:
                silent.append('%s (%s)' % (self.describe_task(job, index), why))
        return silent

    def describe_task(self, task_type, task_index):
        """'worker 1 (/job:worker/task:1 at host2:2222)'."""
        for worker_index, job, index, address in self.tasks():
            if job == task_type and index == int(task_index):
                return 'worker %d (/job:%s/task:%d at %s)' % (worker_index, job, index, address)
        return '/job:%s/task:%s' % (task_type, task_index)


def _fail(problem, source):
    raise ValueError('%s %s; set it on every machine to the same cluster and that machine\'s '
                     'own task, e.g. %s=\'%s\' (see docs/training.md, "Several machines").'
                     % (source, problem, source, EXAMPLE))


def parse_tf_config(text, source='TF_CONFIG'):
    """Parses and checks a TF_CONFIG value.

    Args:
      text: the JSON string (None or blank: no cluster).
      source: the variable's name, for messages.
    Returns:
      a `Cluster`, or None when `text` is empty or describes no cluster (single machine).
    Raises:
      ValueError (one line): malformed JSON, not an object, a missing or unknown task, an index
        out of range, jobs other than chief/worker, more than one chief, bad or repeated
        addresses.
    """
    if text is None or not str(text).strip():
        return None
    try:
        config = json.loads(text)
    except ValueError as err:
        _fail('is not valid JSON (%s%s)' % (getattr(err, 'msg', err), _position(err)), source)
    if not isinstance(config, dict):
        _fail('must be a JSON object with "cluster" and "task", not %s' % type(config).__name__,
              source)
    unknown = sorted(set(config) - {'cluster', 'task', 'environment', 'rpc_layer'})
    if unknown:
        _fail('has unknown key(s) %s' % ', '.join(repr(k) for k in unknown), source)
    cluster = config.get('cluster')
    if not cluster:
        if config.get('task'):
            _fail('has a "task" but no "cluster"', source)
        return None
    if not isinstance(cluster, dict):
        _fail('"cluster" must map job names to address lists', source)
    extra_jobs = sorted(set(cluster) - set(TRAIN_JOBS))
    if extra_jobs:
        _fail('has job(s) %s, which multi-worker training does not use (only "chief" and '
              '"worker"; evaluate with eval_ssd.py)' % ', '.join(repr(j) for j in extra_jobs),
              source)
    spec = {}
    seen = {}
    for job in TRAIN_JOBS:
        if job not in cluster:
            continue
        addresses = cluster[job]
        if isinstance(addresses, dict):  # {"0": "host:port", ...} is TensorFlow's sparse form
            _fail('job %r must list its addresses in task order (a JSON list)' % job, source)
        if not isinstance(addresses, list) or not addresses:
            _fail('job %r must be a non-empty list of "host:port" addresses' % job, source)
        for index, address in enumerate(addresses):
            if not isinstance(address, str) or not re.match(r'^\S+:\d+$', address):
                _fail('job %r task %d has address %r, not "host:port"' % (job, index, address),
                      source)
            if address in seen:
                _fail('gives address %s twice (%s and %s/%d)' % (address, seen[address], job,
                                                                index), source)
            seen[address] = '%s/%d' % (job, index)
        spec[job] = list(addresses)
    if len(spec.get('chief', [])) > 1:
        _fail('has %d "chief" tasks; there can be one (or none: then worker 0 is the chief)'
              % len(spec['chief']), source)

    task = config.get('task')
    if not task:
        _fail('has a "cluster" but no "task" (this machine\'s {"type": ..., "index": ...})',
              source)
    if not isinstance(task, dict) or 'type' not in task or 'index' not in task:
        _fail('"task" must be {"type": "worker", "index": N}, got %s' % json.dumps(task), source)
    task_type, task_index = task['type'], task['index']
    if task_type not in spec:
        _fail('task type %r is not a job of its cluster (%s)'
              % (task_type, ', '.join(sorted(spec))), source)
    if isinstance(task_index, bool) or not isinstance(task_index, int):
        _fail('task index %r is not an integer' % (task_index,), source)
    if not 0 <= task_index < len(spec[task_type]):
        _fail('task index %d is out of range: job %r has %d task(s), indices 0..%d'
              % (task_index, task_type, len(spec[task_type]), len(spec[task_type]) - 1),
              source)
    worker_index = task_index + (len(spec.get('chief', [])) if task_type == 'worker' else 0)
    num_workers = sum(len(v) for v in spec.values())
    return Cluster(spec, task_type, task_index, worker_index, num_workers)


def _position(err):
    lineno, colno = getattr(err, 'lineno', None), getattr(err, 'colno', None)
    return ' at line %d column %d' % (lineno, colno) if lineno else ''


def from_environment(environ, name='TF_CONFIG'):
    """`parse_tf_config(environ.get(name))`: the cluster this process belongs to, or None."""
    return parse_tf_config(environ.get(name), source=name)


# A task named in a TensorFlow error: '/job:worker/replica:0/task:1'.
_TASK_IN_ERROR = re.compile(r'/job:(chief|worker)(?:/replica:\d+)?/task:(\d+)')
_ADDRESS_IN_ERROR = re.compile(r'(?:ipv4:|ipv6:|//|\s|^)(\[?[\w.\-:]+\]?:\d+)')


def lost_workers(cluster, error_text):
    """The other workers an error names (by task or address); all other workers if none.

    Returns:
      list of descriptions like 'worker 1 (/job:worker/task:1 at host2:2222)'.
    """
    own = (cluster.task_type, cluster.task_index)
    named = []
    for job, index in _TASK_IN_ERROR.findall(error_text or ''):
        key = (job, int(index))
        if key != own and key not in named:
            named.append(key)
    by_address = {address: (job, index) for _, job, index, address in cluster.tasks()}
    for address in _ADDRESS_IN_ERROR.findall(error_text or ''):
        key = by_address.get(address.strip('[]'))
        if key and key != own and key not in named:
            named.append(key)
    named = [k for k in named if k[0] in cluster.spec and k[1] < len(cluster.spec[k[0]])]
    if not named:
        named = [(job, index) for _, job, index, _ in cluster.tasks() if (job, index) != own]
    return [cluster.describe_task(job, index) for job, index in named]


# TensorFlow errors (by class name: this module imports no TensorFlow) that a lost peer causes:
# the step's deadline passed, the connection failed, or the collective was aborted.
PEER_FAILURES = ('DeadlineExceededError', 'UnavailableError', 'AbortedError', 'CancelledError')


def is_peer_failure(error):
    """True when a TensorFlow error from a multi-worker step looks like a lost worker."""
    if type(error).__name__ in PEER_FAILURES:
        return True
    text = str(getattr(error, 'message', error))
    return type(error).__name__ == 'InternalError' and (
        'ollective' in text or 'RingReduce' in text or 'BufRendezvous' in text)


def describe_lost_worker(cluster, error_text, timeout_secs):
    """One line for a collective failure: which worker was lost and how to resume."""
    reason = _first_line(error_text)
    return ('Training stopped on %s: lost contact with %s (no answer within the collective '
            'timeout of %s s, or the connection failed: %s). Check that machine, then run the '
            'same command on every worker again: training resumes from the chief\'s latest '
            'checkpoint.' % (cluster.describe_task(cluster.task_type, cluster.task_index),
                             ' and '.join(lost_workers(cluster, error_text)), timeout_secs,
                             reason))


# An HTTP/2 client's connection preface and an empty SETTINGS frame; a gRPC server answers
# with its own SETTINGS frame (frame type 4 in the 4th byte of the 9-byte frame header).
_HTTP2_HELLO = b'PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n' + b'\x00\x00\x00\x04\x00\x00\x00\x00\x00'


def _probe(address, timeout_secs):
    """None when a gRPC server answers at 'host:port', else why not (a few words)."""
    host, port = address.rsplit(':', 1)
    try:
        connection = socket.create_connection((host.strip('[]'), int(port)),
                                              timeout=timeout_secs)
    except OSError:
        return 'nothing answers at that address'
    try:
        connection.sendall(_HTTP2_HELLO)
        header = b''
        while len(header) < 9:
            chunk = connection.recv(9 - len(header))
            if not chunk:
                break
            header += chunk
    except OSError:
        header = b''
    finally:
        connection.close()
    if len(header) == 9 and header[3] == 4:
        return None
    return 'something answers there, but not a TensorFlow worker: another program on that port?'


def is_bind_failure(error):
    """True when a TensorFlow error says this worker's gRPC server could not listen."""
    return 'Could not start gRPC server' in str(getattr(error, 'message', error))


def describe_bind_failure(cluster):
    """One line for a worker whose server could not listen on its TF_CONFIG address."""
    return ('%s could not listen on %s: the port is taken by another program (or the host is '
            'not this machine\'s address); stop that program or give this worker another free '
            'port in TF_CONFIG on every machine, then run the same command again.'
            % (cluster.describe_task(cluster.task_type, cluster.task_index), cluster.address))


def describe_startup_timeout(cluster, timeout_secs, silent):
    """One line for a worker that gave up waiting for the others at start-up.

    Args:
      silent: `Cluster.silent_peers()`, the workers it waited for, each with why.
    """
    return ('%s waited %g s (--collective_timeout_secs) for %s to start training; start the '
            'same command there with its own TF_CONFIG task (check the address and that the '
            'port is free), then run this one again.'
            % (cluster.describe_task(cluster.task_type, cluster.task_index), timeout_secs,
               ' and '.join(silent)))


def _first_line(text, limit=200):
    for line in str(text or '').splitlines():
        line = line.strip()
        if line:
            return line if len(line) <= limit else line[:limit - 3] + '...'
    return 'no details'
