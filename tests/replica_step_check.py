"""Runs ONE training step of the real model_fn and prints the weight change as JSON.

Used by tests/test_train.py in a subprocess (logical CPU devices must be configured before
TensorFlow initializes, so each configuration needs its own process).

    python tests/replica_step_check.py --replicas 2 --init_ckpt CKPT --model_dir DIR [--driver session]

The global batch is always 2 copies of one image: with --replicas 2 each of two replicas
on logical CPU devices gets one copy; with --replicas 1 a single device gets both. With
correct per-replica loss scaling both runs move the weights identically; summing replica
gradients instead of averaging them would double the step.
"""
import argparse
import json
import os
import sys


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
GLOBAL_BATCH = 2


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument('--replicas', type=int, required=True)
    parser.add_argument('--init_ckpt', required=True)
    parser.add_argument('--model_dir', required=True)
    parser.add_argument('--driver', default='auto')
    args = parser.parse_args()

    import numpy as np
    import tensorflow as tf
    from utility import ssd_model
    from utility import drivers
    from utility.training import replicas as replicas_lib

    strategy, replicas, session_config = replicas_lib.setup_replicas(
        multi_gpu=False, num_cpu_replicas=args.replicas, batch_size=GLOBAL_BATCH,
        log=lambda m: None)
    params = ssd_model.make_params(
        batch_size=GLOBAL_BATCH, num_replicas=replicas, learning_rate=0.01,
        lr_decay_factors=[1.0, 1.0, 1.0, 1.0], momentum=0.0,
        checkpoint_path=args.init_ckpt, checkpoint_model_scope='ssd300',
        checkpoint_exclude_scopes='', log_every_n_steps=1)

    def input_fn():
        rng = np.random.RandomState(0)
        image = rng.uniform(-100, 100, size=(300, 300, 3)).astype(np.float32)
        boxes = tf.constant([[0.1, 0.2, 0.5, 0.6], [0.3, 0.3, 0.9, 0.8]], tf.float32)
        labels = tf.constant([3, 12], tf.int32)
        features = {'image': tf.constant(image)}
        ds = tf.data.Dataset.from_tensors(
            (features, ssd_model.encode_labels(boxes, labels, params)))
        return ds.repeat().batch(GLOBAL_BATCH // replicas)

    final = drivers.train(drivers.resolve_driver(args.driver), ssd_model.model_fn, input_fn,
                          params, args.model_dir, max_steps=1, strategy=strategy,
                          session_config=session_config, save_checkpoints_secs=None)
    reader_a = tf.train.load_checkpoint(args.init_ckpt)
    reader_b = tf.train.load_checkpoint(final)
    deltas = {name: reader_b.get_tensor(name) - reader_a.get_tensor(name)
              for name in reader_a.get_variable_to_shape_map()}
    np.savez(os.path.join(args.model_dir, 'deltas.npz'), **deltas)
    step = int(reader_b.get_tensor('global_step'))
    print('RESULT ' + json.dumps({'step': step, 'variables': len(deltas)}))


if __name__ == '__main__':
    main()
