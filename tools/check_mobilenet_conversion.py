"""Checks a converted MobileNetV2 checkpoint against the TFLite file it came from: the same
top-1 ImageNet classes on real photos.

Command (run from the repository root)::

    python3 -m tools.check_mobilenet_conversion \
        --tflite mobilenet_v2_1.0_224_quant.tflite \
        --checkpoint model/mobilenet_v2_imagenet.ckpt --images path/to/photos --count 100

For each of the first --count images (sorted by name, JPEG or PNG) the centre square is cut
out and resized to the file's input size. The TFLite file runs in the TFLite interpreter
(its uint8/int8 input quantized with the file's own scale and zero point); the checkpoint runs
as net.backbones.mobilenet_v2_classifier in TensorFlow (fp32, the backbone's input convention:
RGB - 127.5, x 1/127.5 inside the network), with the classifier layer the converter stored.
Prints the top-1 agreement (and the mean top-5 overlap); exit status 0 when the agreement is
at least --min_agreement (default 0.95), 1 otherwise, 2 for bad input.

What the figure can reach: a fully-quantized file rounds every activation to 8 bits, so where
a photo's two best ImageNet classes are close (photos unlike ImageNet's, e.g. BCCD's blood
smears) its top-1 follows that rounding. The tool therefore also prints the file's agreement
with itself on the same photos with +-1 (of 255) uniform noise added, an invisible change: the
conversion is as close to the file as the file is to itself when the first figure is near or
above that one; and the agreement on the photos where the file is confident (top-1
probability >= 0.3).
"""

import argparse
import os
import sys

import numpy as np

from net import backbones
from tools import convert_backbone_weights as converter

IMAGE_SUFFIXES = ('.jpg', '.jpeg', '.png')


def load_images(directory, count, size):
    """The first `count` images of `directory` (sorted), centre square resized to `size`:
    uint8 [N, size, size, 3] RGB. ValueError when there are none."""
    from PIL import Image
    if not os.path.isdir(directory):
        raise ValueError('--images %s is not a directory of photos.' % directory)
    names = sorted(n for n in os.listdir(directory) if n.lower().endswith(IMAGE_SUFFIXES))
    if not names:
        raise ValueError('--images %s has no .jpg/.png images.' % directory)
    images = []
    for name in names[:count]:
        with Image.open(os.path.join(directory, name)) as image:
            image = image.convert('RGB')
            width, height = image.size
            side = min(width, height)
            left, top = (width - side) // 2, (height - side) // 2
            image = image.crop((left, top, left + side, top + side)).resize(
                (size, size), Image.BILINEAR)
            images.append(np.asarray(image, np.uint8))
    return np.stack(images)


def tflite_logits(interpreter, images):
    """The file's output for each image (dequantized), [N, classes]."""
    inp = interpreter.get_input_details()[0]
    out = interpreter.get_output_details()[0]
    results = []
    for image in images:
        if inp['dtype'] in (np.uint8, np.int8):
            scale, zero_point = inp['quantization']
            real = (image.astype(np.float32) - 127.5) / 127.5
            info = np.iinfo(inp['dtype'])
            value = np.clip(np.round(real / scale + zero_point), info.min, info.max)
            value = value.astype(inp['dtype'])
        else:
            value = (image.astype(np.float32) - 127.5) / 127.5
        interpreter.set_tensor(inp['index'], value[None])
        interpreter.invoke()
        results.append(converter.dequantize(interpreter.get_tensor(out['index'])[0],
                                            out['quantization_parameters']))
    return np.stack(results).reshape(len(images), -1)


def checkpoint_logits(checkpoint, images, num_classes):
    """mobilenet_v2_classifier restored from `checkpoint`, on `images`: [N, num_classes]."""
    import tensorflow as tf
    with tf.Graph().as_default():
        inputs = tf.compat.v1.placeholder(tf.float32, [None] + list(images.shape[1:]))
        with tf.compat.v1.variable_scope(backbones.MOBILENET_V2_SCOPE):
            logits = backbones.mobilenet_v2_classifier(inputs, num_classes)
        saver = tf.compat.v1.train.Saver(tf.compat.v1.global_variables())
        with tf.compat.v1.Session() as session:
            saver.restore(session, checkpoint)
            return np.concatenate([
                session.run(logits, {inputs: images[i:i + 10].astype(np.float32) - 127.5})
                for i in range(0, len(images), 10)])


def agreement(tflite_scores, tf_scores):
    """(top-1 agreement, mean top-5 overlap / 5) of two [N, classes] score arrays."""
    top1 = float(np.mean(np.argmax(tflite_scores, 1) == np.argmax(tf_scores, 1)))
    top5_a = np.argsort(-tflite_scores, 1)[:, :5]
    top5_b = np.argsort(-tf_scores, 1)[:, :5]
    overlap = float(np.mean([len(set(a) & set(b)) / 5.0 for a, b in zip(top5_a, top5_b)]))
    return top1, overlap


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog='python3 -m tools.check_mobilenet_conversion',
        description='Top-1 agreement of a converted MobileNetV2 checkpoint (run in TensorFlow) '
                    'with the TFLite file it came from, on real photos.')
    parser.add_argument('--tflite', required=True, help='The MobileNetV2 .tflite file.')
    parser.add_argument('--checkpoint', required=True,
                        help='Its conversion (tools.convert_backbone_weights --output).')
    parser.add_argument('--images', required=True, help='A directory of photos (.jpg/.png).')
    parser.add_argument('--count', type=int, default=100,
                        help='How many photos (default %(default)s).')
    parser.add_argument('--min_agreement', type=float, default=0.95,
                        help='Exit 1 below this top-1 agreement (default %(default)s).')
    args = parser.parse_args(argv)
    try:
        interpreter = converter.load_interpreter(args.tflite)
        size = int(interpreter.get_input_details()[0]['shape'][1])
        images = load_images(args.images, args.count, size)
        reference = tflite_logits(interpreter, images)
        ours = checkpoint_logits(args.checkpoint, images, reference.shape[1])
    except ValueError as error:
        print('error: %s' % error, file=sys.stderr)
        return 2
    top1, top5 = agreement(reference, ours)
    noisy = np.clip(images.astype(np.int32) + np.random.RandomState(0).randint(
        -1, 2, images.shape), 0, 255).astype(np.uint8)
    self_top1, _ = agreement(reference, tflite_logits(interpreter, noisy))
    probabilities = np.exp(reference - reference.max(1, keepdims=True))
    probabilities /= probabilities.sum(1, keepdims=True)
    if reference.min() >= 0 and np.all(np.abs(reference.sum(1) - 1) < 0.5):  # a softmax
        probabilities = reference
    confident = probabilities.max(1) >= 0.3
    confident_top1 = float(np.mean(np.argmax(reference[confident], 1) ==
                                   np.argmax(ours[confident], 1))) if confident.any() else 0.
    print('%d photos from %s at %dx%d: top-1 agreement %.3f, top-5 overlap %.3f '
          '(TensorFlow %s vs TFLite %s).'
          % (len(images), args.images, size, size, top1, top5, args.checkpoint, args.tflite))
    print('The TFLite file against itself with +-1 pixel noise: top-1 agreement %.3f. On the '
          '%d photos where the file is confident (p >= 0.3): %.3f.'
          % (self_top1, int(confident.sum()), confident_top1))
    return 0 if top1 >= args.min_agreement else 1


if __name__ == '__main__':
    sys.exit(main())
