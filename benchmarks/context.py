"""What the stages of one benchmark run share (the `context` argument of every stage)."""
import os
import shutil
import tempfile

import tensorflow as tf

from benchmarks.flops import backbone_train_gflop
from benchmarks.sample_data import make_sample, prepare_sample
from benchmarks.workers import run_worker


class Context:
    """What stages share: parsed arguments, the (lazily made) sample folders and the
    kernel GFLOP/s (measured once per run)."""

    def __init__(self, args):
        self.args = args
        self._data_dir = args.data_dir
        self._root = None
        self._temp_dir = None
        self._kernels = None
        self._forward_gmac = None

    def _sample_root(self):
        if self._root is None:
            if self.args.cache_dir:
                self._root = os.path.abspath(self.args.cache_dir)
            else:
                self._root = self._temp_dir = tempfile.mkdtemp(prefix='bench_ssd_')
        return self._root

    def voc_root(self):
        """Folder holding the generated VOC-format sample split folder (SAMPLE_NAME)."""
        return make_sample(self._sample_root(), self.args.num_images)

    def data_dir(self):
        """Folder with train-* shards; generates and converts the sample if needed."""
        if self._data_dir is None:
            self._data_dir = prepare_sample(self._sample_root(), self.args.num_images)
        if not tf.io.gfile.glob(os.path.join(self._data_dir, 'train-*')):
            raise SystemExit('ERROR: no train-* TFRecord shards in %s; convert data with '
                             'dataset/convert_voc_sample_tfrecords.py or drop --data_dir to '
                             'let the benchmark make the sample.' % self._data_dir)
        return self._data_dir

    def kernels(self):
        """Large conv / matmul GFLOP/s (worker 'kernels'), measured once per run."""
        if self._kernels is None:
            self._kernels = run_worker('kernels', self.args)
        return self._kernels

    def forward_gmac(self):
        """Forward GMAC per image of SSD300 with --backbone, counted once per run."""
        if self._forward_gmac is None:
            self._forward_gmac = backbone_train_gflop(self.args.backbone)[0]
        return self._forward_gmac

    def close(self):
        if self._temp_dir:
            shutil.rmtree(self._temp_dir, ignore_errors=True)
