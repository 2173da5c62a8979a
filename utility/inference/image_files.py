"""Image files as the demo's input: listing them, decoding them (turned upright by their EXIF
orientation) and an input_fn that feeds them through the eval preprocessing."""
import os

import tensorflow as tf

IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.gif')


def list_image_files(inputs, extensions=IMAGE_EXTENSIONS):
    """Expands files and directories (their images, not recursive, sorted) into a file list.

    Returns:
      (files: list of str, missing: list of (path, reason) for inputs that do not exist).
    """
    files, missing = [], []
    for item in inputs:
        if os.path.isdir(item):
            names = sorted(n for n in os.listdir(item) if n.lower().endswith(tuple(extensions)))
            if not names:
                missing.append((item, 'directory holds no %s files' % '/'.join(extensions)))
            files.extend(os.path.join(item, n) for n in names)
        elif os.path.isfile(item):
            files.append(item)
        else:
            missing.append((item, 'no such file or directory'))
    return files, missing


def _op_error_reason(err):
    """The kernel's own sentence from a graph-mode OpError ('Unknown image file format...')."""
    lines = [line.strip() for line in (err.message or '').splitlines()]
    for k, line in enumerate(lines):
        if line.startswith('[[') and k > 0 and lines[k - 1]:
            return lines[k - 1].rstrip('.')
    lines = [line for line in lines if line]
    return lines[-1].rstrip('.') if lines else type(err).__name__


def exif_orientation(path):
    """The EXIF orientation tag (1..8) of the image file at `path`, 1 when it has none or
    cannot be read (PNG, BMP, GIF, a JPEG without EXIF): what phones write instead of
    turning the pixels of a photo taken on its side."""
    from PIL import Image
    try:
        with Image.open(path) as image:
            value = image.getexif().get(0x0112, 1)
    except Exception:  # pylint: disable=broad-except  (not an image PIL reads: decoded later)
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


class ImageDecoder:
    """Decodes image files with tf.io.decode_image, as the demo's input_fn does, turned upright
    by their EXIF orientation (`exif_orientation`, ssd_model.apply_exif_orientation).

    Runs in a private graph and session (works whether or not eager execution is on). Use as
    a context manager or call close().
    """

    def __init__(self):
        from utility import ssd_model
        self._graph = tf.Graph()
        with self._graph.as_default():
            self._data = tf.compat.v1.placeholder(tf.string, [])
            self._orientation = tf.compat.v1.placeholder_with_default(1, [])
            self._image = ssd_model.apply_exif_orientation(
                tf.io.decode_image(self._data, channels=3, expand_animations=False),
                self._orientation)
        self._sess = tf.compat.v1.Session(graph=self._graph)

    def decode(self, path):
        """uint8 [H, W, 3] RGB of the file at `path`, upright (its EXIF orientation applied).

        Raises:
          ValueError: the file cannot be read or is not a JPEG/PNG/BMP/GIF image.
        """
        try:
            with open(path, 'rb') as f:
                data = f.read()
        except OSError as err:
            raise ValueError('cannot read the file (%s)' % err.strerror) from None
        try:
            return self._sess.run(self._image, {self._data: data,
                                                self._orientation: exif_orientation(path)})
        except tf.errors.OpError as err:
            raise ValueError('not a decodable JPEG/PNG/BMP/GIF image (%s)'
                             % _op_error_reason(err)) from None

    def close(self):
        self._sess.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def make_image_files_input_fn(params, paths, batch_size=1, normalize=True):
    """PREDICT input_fn over image files (decodable ones; see ImageDecoder).

    Features per batch: 'image' float32 [B, S, S, 3] (ssd_model.decode_for_network, S =
    params['train_image_size'], turned upright by the file's EXIF orientation), 'filename'
    string [B] (the path), 'shape' int32 [B, 3] (height, width, 3 of the upright image).
    Files come in `paths` order. normalize=False: images resized only, the TFLite models'
    input (ssd_model.preprocess_eval).
    """
    from utility import ssd_model
    paths = [str(p) for p in paths]
    orientations = [exif_orientation(p) for p in paths]

    def load(path, orientation):
        image, shape = ssd_model.decode_for_network(tf.io.read_file(path), params, orientation,
                                                    normalize)
        return {'image': image, 'filename': path, 'shape': shape}

    def input_fn():
        dataset = tf.data.Dataset.from_tensor_slices((tf.constant(paths, tf.string),
                                                      tf.constant(orientations, tf.int32)))
        return dataset.map(load).batch(int(batch_size)).prefetch(1)

    return input_fn
