r"""Convert Pascal VOC to TFRecords (trainval.txt of VOC2007, VOC2012 -> train-*,
test.txt of VOC2007TEST -> val-*).

    python3 dataset/convert_tfrecords.py --dataset_directory=/data/VOC \
        --output_directory=./tfrecords

All logic lives in dataset/voc_to_tfrecords.py (profile 'voc'); this script only makes the
repository importable before anything loads TensorFlow.
"""
import os
import sys

if __name__ == '__main__':
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
    from dataset import voc_to_tfrecords
    sys.exit(voc_to_tfrecords.main(profile='voc'))
