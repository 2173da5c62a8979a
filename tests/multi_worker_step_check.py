"""Trains the real model_fn for a few steps on fixed images; multi-worker when TF_CONFIG is set.

Used by tests/test_multi_worker.py in subprocesses:

    TF_CONFIG=... python tests/multi_worker_step_check.py --init_ckpt CKPT --model_dir DIR
    python tests/multi_worker_step_check.py --init_ckpt CKPT --model_dir DIR   # reference

The global stream of images is fixed (image k, k = 0, 1, 2, ...; different pixels and boxes).
With TF_CONFIG naming 2 workers (one CPU replica each, replicas.setup_multi_worker of
utility/training/), worker w keeps images k with k % 2 == w (`Dataset.shard`, as the training
input does), so at step s the two replicas see images 2s and 2s+1. Without TF_CONFIG, one
process with MirroredStrategy on 2 logical CPU devices sees the same pair at each step: the
reference. Correct multi-worker training moves the weights as the reference does.
"""
import argparse
import json
import os
import sys


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
GLOBAL_BATCH = 2
STEPS = 3


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument('--init_ckpt', required=True)
    parser.add_argument('--model_dir', required=True)
    parser.add_argument('--driver', default='auto')
    parser.add_argument('--collective_timeout_secs', type=float, default=120)
    args = parser.parse_args()

    import numpy as np
    import tensorflow as tf
    from utility import ssd_model
    from utility import drivers
    from utility.training import cluster as cluster_lib
    from utility.training import replicas as replicas_lib

    cluster = cluster_lib.from_environment(os.environ)
    if cluster is not None:
        strategy, replicas, session_config = replicas_lib.setup_multi_worker(
            cluster, batch_size=GLOBAL_BATCH,
            collective_timeout_secs=args.collective_timeout_secs, log=print)
        num_workers, worker_index = cluster.num_workers, cluster.worker_index
    else:
        strategy, replicas, session_config = replicas_lib.setup_replicas(
            multi_gpu=False, num_cpu_replicas=2, batch_size=GLOBAL_BATCH, log=print)
        num_workers, worker_index = 1, 0
    params = ssd_model.make_params(
        batch_size=GLOBAL_BATCH, num_replicas=replicas, num_workers=num_workers,
        worker_index=worker_index, learning_rate=0.01, lr_decay_factors=[1.0, 1.0, 1.0, 1.0],
        momentum=0.0, checkpoint_path=args.init_ckpt, checkpoint_model_scope='ssd300',
        checkpoint_exclude_scopes='', log_every_n_steps=1)
    anchors = ssd_model._anchors(params)
    count = GLOBAL_BATCH * STEPS
    rng = np.random.RandomState(0)
    images = rng.uniform(-100, 100, size=(count, 300, 300, 3)).astype(np.float32)
    ymin = rng.uniform(0.0, 0.4, size=(count, 2))
    xmin = rng.uniform(0.0, 0.4, size=(count, 2))
    boxes = np.stack([ymin, xmin, ymin + 0.5, xmin + 0.5], axis=-1).astype(np.float32)
    labels = rng.randint(1, 21, size=(count, 2)).astype(np.int32)

    def input_fn():
        def make(k):
            return {'image': tf.gather(images, k)}, ssd_model.encode_labels(
                tf.gather(boxes, k), tf.gather(labels, k), params, anchors)
        ds = tf.data.Dataset.range(count).shard(params['num_workers'], params['worker_index'])
        return ds.map(make).batch(GLOBAL_BATCH // replicas)

    final = drivers.train(drivers.resolve_driver(args.driver), ssd_model.model_fn, input_fn,
                          params, args.model_dir, max_steps=STEPS, strategy=strategy,
                          session_config=session_config, save_checkpoints_secs=None,
                          cluster=cluster)
    own = final
    if cluster is not None and not cluster.is_chief:
        own = tf.train.latest_checkpoint(drivers._worker_scratch_dir(args.model_dir, cluster))
    step = int(tf.train.load_checkpoint(own).get_tensor('global_step'))
    print('RESULT ' + json.dumps({'step': step, 'checkpoint': own,
                                  'worker': worker_index, 'replicas': replicas}), flush=True)


if __name__ == '__main__':
    main()
