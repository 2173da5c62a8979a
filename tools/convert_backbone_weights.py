"""Converts a MobileNetV2 TFLite file into the ImageNet checkpoint `--backbone mobilenet_v2`
restores.

Command (run from the repository root; see model/README.md)::

    python3 -m tools.convert_backbone_weights --input mobilenet_v2_1.0_224_quant.tflite \
        --output model/mobilenet_v2_imagenet.ckpt
    python3 train_ssd.py --backbone mobilenet_v2 --checkpoint_path model/mobilenet_v2_imagenet.ckpt

Input: a TFLite flatbuffer of TF-slim's MobileNetV2 1.0 classifier (224x224 by default,
--input_size), fully quantized (uint8 or int8, per-tensor or per-channel scales) or float, e.g.
`mobilenet_v2_1.0_224_quant.tflite` of the TFLite/Coral model zoos. Read with the installed
TFLite interpreter (ai_edge_litert, else tf.lite) without delegates.

Mapping, by structure: the file's CONV_2D and DEPTHWISE_CONV_2D operators in graph order are
the layers of net.backbones.mobilenet_v2_layers() then the 1x1 classifier; each operator's
filter and bias are dequantized (`dequantize`: (q - zero_point) * scale, along the quantized
dimension when the scales are per channel) and every shape is checked against the backbone's.
Kernels go from TFLite's layout (conv [out, h, w, in], depthwise [1, h, w, channels]) to
TF-slim's ([h, w, in, out], [h, w, channels, 1]).

Batch norm: a TFLite file has it folded into each convolution's weights and bias. The
checkpoint holds those folded weights, and each layer's BatchNorm set to the identity: gamma 1,
beta = the folded bias, moving_mean 0, moving_variance 1 - epsilon (so that (x - 0) /
sqrt(variance + epsilon) * 1 + beta = x + bias in inference). Fine-tuning then trains gamma
and beta from there (or keeps them with --freeze_batch_norm).

Output: a V2 checkpoint with TF-slim's names ('MobilenetV2/Conv/weights', 'MobilenetV2/
expanded_conv_13/expand/BatchNorm/beta', ..., 'MobilenetV2/Logits/Conv2d_1c_1x1/{weights,
biases}'), and a 'checkpoint' state file beside it. TF-slim's own float
mobilenet_v2_1.0_224.ckpt has the same names: it needs no conversion (pass it as
--checkpoint_path directly).

A file that is not a TFLite flatbuffer, is truncated, or holds another network, width multiplier
or input size: one line on stderr, exit status 2.
"""

import argparse
import os
import sys

import numpy as np

from net import backbones

DEFAULT_OUTPUT = os.path.join('model', 'mobilenet_v2_imagenet.ckpt')
DEFAULT_INPUT_SIZE = 224
CLASSIFIER_SCOPE = 'Logits/Conv2d_1c_1x1'
_CONV_OPS = ('CONV_2D', 'DEPTHWISE_CONV_2D')
FOLDED_BATCH_NORM_NOTE = ('Batch norm is folded into the TFLite weights: loaded as weights + '
                          'bias, with BatchNorm set to the identity (gamma 1, beta = bias, '
                          'moving mean 0, moving variance 1 - epsilon).')


def dequantize(values, quantization):
    """Real values of a TFLite tensor: (q - zero_point) * scale.

    Args:
      values: the stored array (uint8 / int8 / int32, or float: returned as float32).
      quantization: the tensor's 'quantization_parameters' ({'scales', 'zero_points',
        'quantized_dimension'}); no scales means not quantized. One scale: per tensor; several:
        per channel along 'quantized_dimension'.
    Returns:
      float32 array of `values`' shape.
    """
    values = np.asarray(values)
    scales = np.asarray(quantization.get('scales', ()), np.float64)
    if scales.size == 0 or values.dtype.kind == 'f':
        return values.astype(np.float32)
    zero_points = np.asarray(quantization.get('zero_points', ()), np.float64)
    if zero_points.size == 0:
        zero_points = np.zeros_like(scales)
    if scales.size > 1:
        axis = int(quantization.get('quantized_dimension', 0))
        shape = [1] * values.ndim
        shape[axis] = scales.size
        scales, zero_points = scales.reshape(shape), zero_points.reshape(shape)
    return ((values.astype(np.float64) - zero_points) * scales).astype(np.float32)


def _interpreter_class():
    try:
        from ai_edge_litert import interpreter as litert
        return litert.Interpreter, litert.OpResolverType
    except ImportError:
        import tensorflow as tf
        return tf.lite.Interpreter, tf.lite.experimental.OpResolverType


def load_interpreter(path):
    """The TFLite interpreter of `path` (no delegates), tensors allocated; ValueError (one line)
    when the file is missing or is not a readable TFLite flatbuffer."""
    if not os.path.isfile(path):
        raise ValueError('--input %s does not exist; give the path of a MobileNetV2 .tflite file '
                         '(e.g. mobilenet_v2_1.0_224_quant.tflite).' % path)
    with open(path, 'rb') as f:
        content = f.read()
    interpreter_class, resolver = _interpreter_class()
    try:
        interpreter = interpreter_class(
            model_content=content,
            experimental_op_resolver_type=resolver.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
        interpreter.allocate_tensors()
    except (ValueError, RuntimeError) as error:
        raise ValueError('--input %s is not a readable TFLite file (%s); it is damaged or '
                         'truncated: download it again.'
                         % (path, str(error).strip().splitlines()[0] if str(error) else
                            type(error).__name__)) from None
    return interpreter


def _constant(interpreter, details, index, producers):
    """Dequantized constant tensor `index`, through a DEQUANTIZE op if one produces it."""
    if index in producers and producers[index]['op_name'] == 'DEQUANTIZE':
        index = producers[index]['inputs'][0]
    tensor = details[index]
    try:
        values = interpreter.get_tensor(index)
    except ValueError:
        raise ValueError('tensor %r of the file is not a constant' % tensor['name']) from None
    return dequantize(values, tensor['quantization_parameters'])


def read_mobilenet_v2(interpreter, input_size=DEFAULT_INPUT_SIZE, path='the file'):
    """The MobileNetV2 1.0 layers of a TFLite interpreter, mapped by structure.

    Returns:
      (layers, classifier): layers = [(scope, kind, kernel in TF-slim layout, bias)] for
      backbones.mobilenet_v2_layers() in order; classifier = (weights [1, 1, 1280, classes],
      biases [classes]) or None when the file ends at Conv_1.
    Raises:
      ValueError (one line): another input size, another network or width multiplier
      (the first shape that differs), a truncated graph.
    """
    inputs = interpreter.get_input_details()
    shape = [int(v) for v in inputs[0]['shape']] if len(inputs) == 1 else None
    if shape is None or len(shape) != 4 or shape[3] != 3:
        raise ValueError('%s has input(s) %s, not one [1, H, W, 3] image: it is not a MobileNetV2 '
                         'classifier.' % (path, [list(i['shape']) for i in inputs]))
    if shape[1:3] != [input_size, input_size]:
        raise ValueError('%s takes %dx%d images, not %dx%d: pass a MobileNetV2 1.0 file for '
                         '%dx%d input (mobilenet_v2_1.0_%d_quant.tflite), or --input_size %d.'
                         % (path, shape[1], shape[2], input_size, input_size, input_size,
                            input_size, input_size, shape[1]))
    details = {t['index']: t for t in interpreter.get_tensor_details()}
    ops = interpreter._get_ops_details()  # pylint: disable=protected-access
    producers = {out: op for op in ops for out in op['outputs']}
    convs = [op for op in ops if op['op_name'] in _CONV_OPS]
    expected = backbones.mobilenet_v2_layers()
    layers = []
    for position, (scope, kind, slim_shape) in enumerate(expected):
        if position >= len(convs):
            raise ValueError('%s ends after %d convolutions; MobileNetV2 has %d (+ the '
                             'classifier): the file is truncated or not MobileNetV2.'
                             % (path, len(convs), len(expected)))
        op = convs[position]
        want = 'DEPTHWISE_CONV_2D' if kind == 'depthwise' else 'CONV_2D'
        if op['op_name'] != want or len(op['inputs']) < 3:
            raise ValueError('%s: operator %d is %s, MobileNetV2 1.0 has a %s with a bias there '
                             '(%s): not the same network.'
                             % (path, position, op['op_name'], want, scope))
        kernel = _constant(interpreter, details, op['inputs'][1], producers)
        bias = _constant(interpreter, details, op['inputs'][2], producers)
        # conv [out, h, w, in] -> [h, w, in, out]; depthwise [1, h, w, c] -> [h, w, c, 1]
        kernel = np.transpose(kernel, (1, 2, 3, 0))
        channels = slim_shape[3] if kind == 'conv' else slim_shape[2]
        if tuple(kernel.shape) != tuple(slim_shape) or tuple(bias.shape) != (channels,):
            hint = (' (a width multiplier other than 1.0?)' if position == 0 else '')
            raise ValueError('%s: %s has kernel %s and bias %s, MobileNetV2 1.0 has %s and (%d,)'
                             '%s: convert a MobileNetV2 1.0 file.'
                             % (path, scope, list(kernel.shape), list(bias.shape),
                                list(slim_shape), channels, hint))
        layers.append((scope, kind, kernel, bias))
    classifier = None
    if len(convs) > len(expected):
        op = convs[len(expected)]
        if op['op_name'] == 'CONV_2D' and len(op['inputs']) >= 3:
            weights = np.transpose(_constant(interpreter, details, op['inputs'][1], producers),
                                   (1, 2, 3, 0))
            biases = _constant(interpreter, details, op['inputs'][2], producers)
            if weights.shape[:3] == (1, 1, backbones.MOBILENET_V2_LAST_DEPTH):
                classifier = (weights, biases)
    return layers, classifier


def checkpoint_tensors(layers, classifier=None, scope=backbones.MOBILENET_V2_SCOPE):
    """{TF-slim name: array} of the converted layers: each kernel, and its BatchNorm as the
    identity around the folded bias (FOLDED_BATCH_NORM_NOTE); the classifier's weights and
    biases when given. Names and shapes equal backbones.mobilenet_v2_variable_shapes()."""
    epsilon = backbones.MOBILENET_BATCH_NORM_EPSILON
    tensors = {}
    for layer, kind, kernel, bias in layers:
        prefix = '%s/%s/' % (scope, layer)
        tensors[prefix + ('weights' if kind == 'conv' else 'depthwise_weights')] = kernel
        tensors[prefix + 'BatchNorm/gamma'] = np.ones_like(bias)
        tensors[prefix + 'BatchNorm/beta'] = bias
        tensors[prefix + 'BatchNorm/moving_mean'] = np.zeros_like(bias)
        tensors[prefix + 'BatchNorm/moving_variance'] = np.full_like(bias, 1.0 - epsilon)
    if classifier is not None:
        tensors['%s/%s/weights' % (scope, CLASSIFIER_SCOPE)] = classifier[0]
        tensors['%s/%s/biases' % (scope, CLASSIFIER_SCOPE)] = classifier[1]
    return {name: np.ascontiguousarray(value, np.float32) for name, value in tensors.items()}


def convert(input_path, output=DEFAULT_OUTPUT, input_size=DEFAULT_INPUT_SIZE):
    """TFLite file -> checkpoint. Returns (written prefix, number of tensors, has classifier)."""
    from tools.convert_vgg_weights import write_checkpoint
    if not output:
        raise ValueError('--output is empty; give a checkpoint prefix such as %s.'
                         % DEFAULT_OUTPUT)
    interpreter = load_interpreter(input_path)
    layers, classifier = read_mobilenet_v2(interpreter, input_size, input_path)
    tensors = checkpoint_tensors(layers, classifier)
    expected = backbones.mobilenet_v2_variable_shapes()
    for name, shape in expected.items():  # the mapping's own invariant
        assert tensors[name].shape == shape, (name, tensors[name].shape, shape)
    return write_checkpoint(tensors, output), len(tensors), classifier is not None


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog='python3 -m tools.convert_backbone_weights',
        description='Convert a MobileNetV2 1.0 TFLite file (uint8/int8 or float) into the '
                    'ImageNet checkpoint --backbone mobilenet_v2 restores (model/README.md).')
    parser.add_argument('--input', required=True,
                        help='MobileNetV2 1.0 .tflite file, e.g. '
                             'mobilenet_v2_1.0_224_quant.tflite.')
    parser.add_argument('--output', default=DEFAULT_OUTPUT,
                        help='Output checkpoint prefix (default %(default)s).')
    parser.add_argument('--input_size', type=int, default=DEFAULT_INPUT_SIZE,
                        help='Input side the file must have (default %(default)s).')
    args = parser.parse_args(argv)
    try:
        prefix, count, has_classifier = convert(args.input, args.output, args.input_size)
    except ValueError as error:
        print('error: %s' % error, file=sys.stderr)
        return 2
    print('Wrote %s: %d tensors of MobileNetV2 1.0 (TF-slim names, scope %s)%s.'
          % (prefix, count, backbones.MOBILENET_V2_SCOPE,
             ', with its ImageNet classifier' if has_classifier else ''))
    print(FOLDED_BATCH_NORM_NOTE)
    return 0


if __name__ == '__main__':
    sys.exit(main())
