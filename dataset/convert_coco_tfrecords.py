r"""Convert a COCO instances json and its images to TFRecords (<split>-* shards + manifest.json).

    python3 dataset/convert_coco_tfrecords.py --annotations_file instances_train2017.json \
        --images_dir train2017 --output_directory coco_tfrecords --split train
    python3 dataset/convert_coco_tfrecords.py --annotations_file instances_val2017.json \
        --images_dir val2017 --output_directory coco_tfrecords --split val

All logic lives in dataset/coco_to_tfrecords.py; this script only makes the repository
importable before anything loads TensorFlow.
"""
import os
import sys

if __name__ == '__main__':
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
    from dataset import coco_to_tfrecords
    sys.exit(coco_to_tfrecords.main())
