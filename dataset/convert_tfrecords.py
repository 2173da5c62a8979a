r"""Convert Pascal VOC to TFRecords (trainval.txt of VOC2007, VOC2012 -> train-*,
test.txt of VOC2007TEST -> val-*).

    python3 dataset/convert_tfrecords.py --dataset_directory=/data/VOC \
        --output_directory=./tfrecords

All logic lives in dataset/voc_to_tfrecords.py (profile 'voc').
"""
import os
import sys

_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _REPO_ROOT not in sys.path:
    sys.path.insert(0, _REPO_ROOT)
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

from dataset import voc_to_tfrecords  # noqa: E402


def main(argv=None):
    return voc_to_tfrecords.main(argv, profile='voc')


if __name__ == '__main__':
    sys.exit(main())
