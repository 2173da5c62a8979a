r"""Convert a YOLO-layout data set (data.yaml, images/, labels/) to TFRecords (train-*, val-*
shards + manifest.json).

    python3 dataset/convert_yolo_tfrecords.py --data_yaml my_data/data.yaml \
        --output_directory my_data/tfrecords

All logic lives in dataset/yolo_to_tfrecords.py; this script only makes the repository
importable before anything loads TensorFlow. Exit status 2 with one ERROR line for input that
stops the conversion (nothing is written then).
"""
import os
import sys

if __name__ == '__main__':
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
    from dataset import yolo_to_tfrecords
    sys.exit(yolo_to_tfrecords.main())
