r"""Convert the VOC-format sample to TFRecords (train.txt -> train-*, val.txt -> val-*).

    cd dataset && python3 convert_voc_sample_tfrecords.py --dataset_directory=./ \
        --output_directory=tfrecords --train_splits VOC2012_sample \
        --validation_splits VOC2012_sample

All logic lives in dataset/voc_to_tfrecords.py (profile 'sample'); this script only makes the
repository importable before anything loads TensorFlow.
"""
import os
import sys

if __name__ == '__main__':
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
    from dataset import voc_to_tfrecords
    sys.exit(voc_to_tfrecords.main(profile='sample'))
