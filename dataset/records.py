"""The converters' TFRecord format and its two parsers (`parse_example` for training,
`parse_ground_truth` for scoring).

Record format (one ``tf.train.Example`` per image, written by ``shard_writer.make_example``
for both converters; records of the original scripts use the same keys and load too):

    image/encoded                 bytes   JPEG, RGB
    image/format                  bytes   b'jpeg'
    image/filename                bytes   '<image id>.jpg'
    image/height, image/width, image/channels    int64
    image/shape                   int64 [3]  (height, width, channels)
    image/object/bbox/{xmin,ymin,xmax,ymax}      float [N], normalized
    image/object/bbox/label       int64 [N]  label map index (1..C-1; VOC: VOC_LABELS, 1..20)
    image/object/bbox/label_text  bytes [N]  class name
    image/object/bbox/difficult   int64 [N]
    image/object/bbox/truncated   int64 [N]
    image/object/bbox/iscrowd     int64 [N]  1: a COCO crowd region (never a training positive;
                                  the metrics ignore detections on it); absent reads as 0
    image/source_id               bytes      the source's image id (COCO: its image_id); optional

Pixel conventions (each converter records its own in the manifest's 'pixel_convention'):
  * VOC (the original's): a 1-based pixel coordinate ``v`` is stored as ``v / width`` (x) or
    ``v / height`` (y); back to pixels is ``normalized * width``.
  * COCO: ``bbox [x, y, w, h]`` in 0-based continuous pixels is stored exactly as
    ``x / width``, ``(x + w) / width`` (and likewise for y), no 1-pixel shift; back to COCO's
    ``[x, y, w, h]`` is ``[xmin * width, ymin * height, (xmax - xmin) * width, ...]``.
"""

import tensorflow as tf

# The annotation keys both parsers read; parse_example adds the image bytes,
# parse_ground_truth the stored image size.
_GROUND_TRUTH_FEATURES = {
    'image/filename': tf.io.FixedLenFeature((), tf.string, default_value=''),
    'image/object/bbox/xmin': tf.io.VarLenFeature(tf.float32),
    'image/object/bbox/ymin': tf.io.VarLenFeature(tf.float32),
    'image/object/bbox/xmax': tf.io.VarLenFeature(tf.float32),
    'image/object/bbox/ymax': tf.io.VarLenFeature(tf.float32),
    'image/object/bbox/label': tf.io.VarLenFeature(tf.int64),
    'image/object/bbox/difficult': tf.io.VarLenFeature(tf.int64),
    'image/object/bbox/truncated': tf.io.VarLenFeature(tf.int64),
    'image/object/bbox/iscrowd': tf.io.VarLenFeature(tf.int64),
    'image/source_id': tf.io.FixedLenFeature((), tf.string, default_value=''),
}
_IMAGE_FEATURES = {
    **_GROUND_TRUTH_FEATURES,
    'image/encoded': tf.io.FixedLenFeature((), tf.string),
}
_SIZE_FEATURES = {
    **_GROUND_TRUTH_FEATURES,
    'image/height': tf.io.FixedLenFeature((), tf.int64, default_value=0),
    'image/width': tf.io.FixedLenFeature((), tf.int64, default_value=0),
}


def _annotations(parsed):
    """filename, boxes, labels, difficult, truncated from a parse of _GROUND_TRUTH_FEATURES."""
    def dense(key, dtype):
        return tf.cast(tf.sparse.to_dense(parsed[key]), dtype)

    boxes = tf.stack([dense('image/object/bbox/ymin', tf.float32),
                      dense('image/object/bbox/xmin', tf.float32),
                      dense('image/object/bbox/ymax', tf.float32),
                      dense('image/object/bbox/xmax', tf.float32)], axis=1)
    labels = dense('image/object/bbox/label', tf.int32)
    num_boxes = tf.shape(labels)[0]

    def flags(key):
        values = dense(key, tf.int32)
        return tf.cond(tf.equal(tf.shape(values)[0], num_boxes),
                       lambda: values, lambda: tf.zeros([num_boxes], tf.int32))

    return {
        'filename': parsed['image/filename'],
        'boxes': tf.reshape(boxes, [-1, 4]),
        'labels': labels,
        'difficult': flags('image/object/bbox/difficult'),
        'truncated': flags('image/object/bbox/truncated'),
        'iscrowd': flags('image/object/bbox/iscrowd'),
        'source_id': parsed['image/source_id'],
    }


def parse_example(serialized):
    """Parses one serialized ``tf.train.Example`` (a string scalar tensor).

    Returns a dict:
      image:     uint8 [H, W, 3], RGB (decoded from image/encoded)
      filename:  string scalar
      shape:     int32 [3], (height, width, 3) of the decoded image
      boxes:     float32 [N, 4], [ymin, xmin, ymax, xmax] normalized (see the
                 module docstring for the pixel convention)
      labels:    int32 [N], 1..20 (VOC_LABELS index)
      difficult: int32 [N]
      truncated: int32 [N]
      iscrowd:   int32 [N], 1 for COCO crowd regions
      source_id: string scalar, the source's image id ('' when the record has none)
    Missing difficult/truncated/iscrowd lists (or lists of the wrong length) read as 0.
    """
    parsed = tf.io.parse_single_example(serialized, _IMAGE_FEATURES)
    image = tf.io.decode_jpeg(parsed['image/encoded'], channels=3)
    image.set_shape([None, None, 3])
    annotations = _annotations(parsed)
    return {
        'image': image,
        'filename': annotations.pop('filename'),
        'shape': tf.shape(image, out_type=tf.int32),
        **annotations,
    }


def parse_ground_truth(serialized):
    """Parses the annotations of one serialized ``tf.train.Example`` without
    reading or decoding the image (fast: for scoring, not for training).

    Returns a dict:
      filename:  string scalar
      height, width: int32 scalars, the stored image/height and image/width
                 (0 when the record lacks them)
      boxes, labels, difficult, truncated, iscrowd, source_id: as ``parse_example``.
    """
    parsed = tf.io.parse_single_example(serialized, _SIZE_FEATURES)
    annotations = _annotations(parsed)
    return {
        'filename': annotations.pop('filename'),
        'height': tf.cast(parsed['image/height'], tf.int32),
        'width': tf.cast(parsed['image/width'], tf.int32),
        **annotations,
    }
