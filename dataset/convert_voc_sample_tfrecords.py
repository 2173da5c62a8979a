r"""Convert the VOC-format sample to TFRecords (train.txt -> train-*, val.txt -> val-*).

    cd dataset && python3 convert_voc_sample_tfrecords.py --dataset_directory=./ \
        --output_directory=tfrecords --train_splits VOC2012_sample \
        --validation_splits VOC2012_sample

All logic lives in dataset/voc_to_tfrecords.py (profile 'sample').
"""
import os
import sys

_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _REPO_ROOT not in sys.path:
    sys.path.insert(0, _REPO_ROOT)
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

from dataset import voc_to_tfrecords  # noqa: E402


def main(argv=None):
    return voc_to_tfrecords.main(argv, profile='sample')


if __name__ == '__main__':
    sys.exit(main())
