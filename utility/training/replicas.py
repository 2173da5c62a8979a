"""Where the replicas run: MirroredStrategy over the visible GPUs or N logical CPU devices,
or MultiWorkerMirroredStrategy over a TF_CONFIG cluster; the session config that goes with it
and the check that the global batch divides over the replicas."""
import tensorflow as tf


def _session_config(gpus, num_cpu_threads, gpu_memory_fraction):
    """Thread pools (0 = one per core) and, with GPUs, their memory share (1.0 = grow)."""
    config = tf.compat.v1.ConfigProto(allow_soft_placement=True)
    config.intra_op_parallelism_threads = int(num_cpu_threads)
    config.inter_op_parallelism_threads = int(num_cpu_threads)
    if gpus:
        config.gpu_options.per_process_gpu_memory_fraction = float(gpu_memory_fraction)
        config.gpu_options.allow_growth = gpu_memory_fraction >= 1.0
    return config


def setup_replicas(multi_gpu=True, num_cpu_replicas=0, batch_size=None,
                   num_cpu_threads=0, gpu_memory_fraction=1.0, log=print):
    """Chooses the devices to train on and builds the matching strategy and session config.

    Must run before TensorFlow initializes its devices (i.e. before the first op runs).

    - GPUs visible and `multi_gpu`: MirroredStrategy over every visible GPU.
    - `num_cpu_replicas` >= 2 (and no GPU used): the CPU is split into that many logical
      devices and MirroredStrategy runs one replica on each. This exercises the multi-replica
      code path on a machine without GPUs (tests, CI).
    - Otherwise: no strategy, a single device (one GPU if present, else the CPU).

    `batch_size` is the global batch and must divide evenly over the replicas.

    Returns:
      (strategy or None, num_replicas, tf.compat.v1.ConfigProto)
    """
    gpus = tf.config.list_physical_devices('GPU')
    config = _session_config(gpus, num_cpu_threads, gpu_memory_fraction)

    strategy = None
    num_replicas = 1
    if gpus and multi_gpu:
        devices = ['/gpu:%d' % i for i in range(len(gpus))]
        strategy = tf.distribute.MirroredStrategy(devices=devices)
        num_replicas = len(devices)
        log('Training on %d GPU(s) with MirroredStrategy: %s' % (num_replicas, ', '.join(devices)))
    elif not gpus and num_cpu_replicas and int(num_cpu_replicas) >= 2:
        num_replicas = int(num_cpu_replicas)
        cpu = tf.config.list_physical_devices('CPU')[0]
        try:
            tf.config.set_logical_device_configuration(
                cpu, [tf.config.LogicalDeviceConfiguration()] * num_replicas)
        except RuntimeError as err:
            raise RuntimeError(
                'Could not split the CPU into %d logical devices because TensorFlow was '
                'already initialized (%s); call setup_replicas before running any op.'
                % (num_replicas, err)) from None
        devices = ['/cpu:%d' % i for i in range(num_replicas)]
        strategy = tf.distribute.MirroredStrategy(
            devices=devices, cross_device_ops=tf.distribute.ReductionToOneDevice())
        config.device_count['CPU'] = num_replicas
        log('No GPU: training with MirroredStrategy on %d logical CPU devices: %s'
            % (num_replicas, ', '.join(devices)))
    elif gpus:
        log('Training on one GPU without a distribution strategy (--multi_gpu is off).')
    else:
        log('No GPU found: training on the CPU (one replica). Use --num_cpu_replicas=2 to '
            'exercise the MirroredStrategy path on logical CPU devices.')

    if batch_size is not None and int(batch_size) % num_replicas != 0:
        raise ValueError(
            '--batch_size=%d does not divide evenly over %d replicas; use a multiple of %d '
            '(it is the global batch, split equally over the replicas).'
            % (batch_size, num_replicas, num_replicas))
    return strategy, num_replicas, config


def setup_multi_worker(cluster, batch_size=None, num_cpu_threads=0, gpu_memory_fraction=1.0,
                       collective_timeout_secs=600, log=print):
    """MultiWorkerMirroredStrategy over the workers of `cluster` (a
    utility.training.cluster.Cluster).

    Each worker trains one replica per visible GPU (one CPU replica without GPUs); gradients
    are averaged over all replicas of all workers by collective all-reduce. The strategy is the
    graph-mode one (tf.compat.v1...MultiWorkerMirroredStrategy), built inside a scratch graph so
    that it starts no eager server: the driver starts the worker's server (see
    utility/drivers.py). Every collective op gives up after `collective_timeout_secs`, so a
    worker whose peer died stops instead of waiting forever.

    `batch_size` is the global batch over all workers and must divide over all replicas.

    Returns:
      (strategy, num_replicas over the whole cluster, tf.compat.v1.ConfigProto)
    """
    gpus = tf.config.list_physical_devices('GPU')
    config = _session_config(gpus, num_cpu_threads, gpu_memory_fraction)
    timeout = float(collective_timeout_secs or 0)
    if timeout > 0:
        # Every blocking call of a step (collectives included) fails after this long: the
        # backstop for a peer that stopped answering without closing its connections.
        config.operation_timeout_in_ms = int(timeout * 1000)
    resolver = tf.distribute.cluster_resolver.SimpleClusterResolver(
        tf.train.ClusterSpec(cluster.spec), task_type=cluster.task_type,
        task_id=cluster.task_index, num_accelerators={'GPU': len(gpus)}, rpc_layer='grpc')
    with tf.Graph().as_default():
        strategy = tf.compat.v1.distribute.experimental.MultiWorkerMirroredStrategy(
            cluster_resolver=resolver)
        # The v1 constructor takes no CommunicationOptions; the drivers' configure() rebuilds
        # the all-reduce from this attribute, so the timeout reaches every collective op.
        strategy.extended._communication_options = (  # pylint: disable=protected-access
            tf.distribute.experimental.CommunicationOptions(
                timeout_seconds=timeout if timeout > 0 else None))
        strategy.configure(session_config=config, cluster_spec=cluster.spec,
                           task_type=cluster.task_type, task_id=cluster.task_index)
    num_replicas = int(strategy.num_replicas_in_sync)
    per_worker = num_replicas // cluster.num_workers
    log('Multi-worker training (TF_CONFIG): this is %s of %d, %d replica(s) here (%s), %d in '
        'all; the chief (worker 0, %s) writes checkpoints and summaries.'
        % (cluster.describe_task(cluster.task_type, cluster.task_index), cluster.num_workers,
           per_worker, '%d GPU(s)' % len(gpus) if gpus else 'CPU', num_replicas,
           cluster.tasks()[0][3]))
    if batch_size is not None and int(batch_size) % num_replicas != 0:
        raise ValueError(
            '--batch_size=%d does not divide evenly over %d replicas (%d workers x %d); use a '
            'multiple of %d (it is the global batch, split equally over all replicas of all '
            'workers).' % (batch_size, num_replicas, cluster.num_workers, per_worker,
                           num_replicas))
    return strategy, num_replicas, config
