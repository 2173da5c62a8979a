"""Converts pretrained VGG-16 weights into the reduced-fc checkpoint SSD300 restores.

Commands (run from the repository root; see model/README.md)::

    # TF-slim's full VGG-16 (vgg_16.ckpt from vgg_16_2016_08_28.tar.gz), RGB-trained:
    python3 -m tools.convert_vgg_weights --from_slim vgg_16.ckpt --output model/vgg16_reducedfc
    # ssd.pytorch's reduced-fc VGG-16 (vgg16_reducedfc.pth, Caffe weights, BGR); needs PyTorch:
    python3 -m tools.convert_vgg_weights --from_pytorch vgg16_reducedfc.pth \
        --output model/vgg16_reducedfc
    # print any checkpoint's variables and shapes (to verify):
    python3 -m tools.convert_vgg_weights --list model

Output: a V2 checkpoint '<output>.index' + '<output>.data-00000-of-00001' holding exactly the 30
variables of net.backbones.VGG_REDUCED_FC_SHAPES ('vgg_16/conv1/conv1_1/weights' ...
'vgg_16/fc7/biases', float32, HWIO kernels), and a 'checkpoint' state file in the output
directory pointing at it, so `train_ssd.py --checkpoint_path=./model` (the default) finds it.

Reduced fc (as in the SSD paper / Caffe SSD): fc6 7x7x512x4096 becomes a 3x3x512x1024 kernel used
with dilation 6 by keeping the spatial taps 0, 3, 6 and every fourth filter (0, 4, 8, ...); fc7
1x1x4096x4096 becomes 1x1x1024x1024 by keeping every fourth input (the kept fc6 filters) and
every fourth output channel; biases are subsampled alike.

Channel order: SSD300 takes BGR images. TF-slim's VGG-16 was trained on RGB, so the slim
conversion reverses conv1_1's input channels (kernel[:, :, ::-1, :]); pass
--keep_channel_order to skip that. The .pth weights come from Caffe and are already BGR: no
reversal.
"""

import argparse
import collections
import os
import re
import sys

import numpy as np
import tensorflow as tf

from common import defaults
from net.backbones import VGG_REDUCED_FC_SHAPES
from utility.checkpoints import locate

# TF-slim full VGG-16 shapes of the two fully connected layers (as convolutions).
SLIM_FC_SHAPES = {'fc6/weights': (7, 7, 512, 4096), 'fc6/biases': (4096,),
                  'fc7/weights': (1, 1, 4096, 4096), 'fc7/biases': (4096,)}

# ssd.pytorch's `vgg` ModuleList: index of each conv; 31 = fc6 (dilated conv6), 33 = fc7.
PYTORCH_LAYER_INDICES = collections.OrderedDict(
    [(0, 'conv1/conv1_1'), (2, 'conv1/conv1_2'),
     (5, 'conv2/conv2_1'), (7, 'conv2/conv2_2'),
     (10, 'conv3/conv3_1'), (12, 'conv3/conv3_2'), (14, 'conv3/conv3_3'),
     (17, 'conv4/conv4_1'), (19, 'conv4/conv4_2'), (21, 'conv4/conv4_3'),
     (24, 'conv5/conv5_1'), (26, 'conv5/conv5_2'), (28, 'conv5/conv5_3'),
     (31, 'fc6'), (33, 'fc7')])

DEFAULT_OUTPUT = os.path.join('model', 'vgg16_reducedfc')

_PYTORCH_KEY = re.compile(r'^(?P<prefix>(?:.*\.)?)(?P<index>\d+)\.(?P<kind>weight|bias)$')
_EXPECTED = collections.OrderedDict(VGG_REDUCED_FC_SHAPES)


def _layer_names():
    """Checkpoint layer paths without scope and variable: 'conv1/conv1_1', ..., 'fc7'."""
    names = []
    for name, _ in VGG_REDUCED_FC_SHAPES:
        layer = name[len(defaults.VGG16_CHECKPOINT_SCOPE) + 1:].rpartition('/')[0]
        if layer not in names:
            names.append(layer)
    return names


def decimate(array, steps):
    """Keeps every steps[i]-th element along axis i, starting at index 0.

    Args:
      array: np.ndarray of rank len(steps).
      steps: positive ints, one per axis (1 keeps the axis whole).
    Returns:
      array[::steps[0], ::steps[1], ...] (a copy).
    """
    array = np.asarray(array)
    if array.ndim != len(steps):
        raise ValueError('decimate got a rank-%d array but %d steps; give one step per axis.'
                         % (array.ndim, len(steps)))
    return np.ascontiguousarray(array[tuple(slice(None, None, int(s)) for s in steps)])


def reduce_fc6(weights, biases):
    """fc6 [7, 7, 512, 4096], [4096] -> [3, 3, 512, 1024], [1024] (taps 0,3,6; filters 0,4,...).

    The 3x3 kernel is applied with dilation 6, covering the original 7x7 receptive field on the
    pool5 map (SSD's pool5 is 3x3 stride 1, so the map stays 19x19).
    """
    _check_shape('fc6/weights', weights, SLIM_FC_SHAPES['fc6/weights'])
    _check_shape('fc6/biases', biases, SLIM_FC_SHAPES['fc6/biases'])
    return decimate(weights, (3, 3, 1, 4)), decimate(biases, (4,))


def reduce_fc7(weights, biases):
    """fc7 [1, 1, 4096, 4096], [4096] -> [1, 1, 1024, 1024], [1024].

    Keeps every fourth input channel (= the fc6 filters reduce_fc6 keeps) and output channel.
    """
    _check_shape('fc7/weights', weights, SLIM_FC_SHAPES['fc7/weights'])
    _check_shape('fc7/biases', biases, SLIM_FC_SHAPES['fc7/biases'])
    return decimate(weights, (1, 1, 4, 4)), decimate(biases, (4,))


def _check_shape(name, array, expected):
    if tuple(np.shape(array)) != tuple(expected):
        raise ValueError('%s has shape %s but %s is expected; check that the source is the '
                         'right VGG-16 checkpoint.' % (name, list(np.shape(array)), list(expected)))


def _check_reduced_fc(tensors):
    """Asserts `tensors` holds exactly VGG_REDUCED_FC_SHAPES (names and shapes)."""
    for name, shape in VGG_REDUCED_FC_SHAPES:
        if name not in tensors:
            raise ValueError('Converted weights lack %s; the source checkpoint is incomplete.'
                             % name)
        _check_shape(name, tensors[name], shape)


def convert_slim_tensors(get_tensor, reverse_input_channels=True,
                         source_scope=defaults.VGG16_CHECKPOINT_SCOPE):
    """TF-slim full VGG-16 weights -> reduced-fc weights in checkpoint naming.

    Args:
      get_tensor: callable name -> np.ndarray, or a dict, with slim names
        '<source_scope>/conv1/conv1_1/weights' ... '<source_scope>/fc7/biases' (fc8 ignored).
      reverse_input_channels: reverse conv1_1's input channels (RGB-trained -> BGR input).
      source_scope: scope of the VGG variables in the source.
    Returns:
      OrderedDict name -> float32 array, names and shapes of VGG_REDUCED_FC_SHAPES.
    """
    if isinstance(get_tensor, dict):
        get_tensor = get_tensor.__getitem__
    out = collections.OrderedDict()
    for layer in _layer_names():
        weights = np.asarray(get_tensor('%s/%s/weights' % (source_scope, layer)), np.float32)
        biases = np.asarray(get_tensor('%s/%s/biases' % (source_scope, layer)), np.float32)
        if layer == 'fc6':
            weights, biases = reduce_fc6(weights, biases)
        elif layer == 'fc7':
            weights, biases = reduce_fc7(weights, biases)
        elif layer == 'conv1/conv1_1' and reverse_input_channels:
            weights = np.ascontiguousarray(weights[:, :, ::-1, :])
        out['%s/%s/weights' % (defaults.VGG16_CHECKPOINT_SCOPE, layer)] = weights
        out['%s/%s/biases' % (defaults.VGG16_CHECKPOINT_SCOPE, layer)] = biases
    _check_reduced_fc(out)
    return out


def convert_pytorch_state_dict(state_dict):
    """ssd.pytorch reduced-fc VGG-16 state dict -> reduced-fc weights in checkpoint naming.

    Args:
      state_dict: mapping name -> array-like (numpy array or torch tensor). Keys 'N.weight' /
        'N.bias' with an optional prefix ('vgg.', 'features.', 'module.vgg.', ...), N the
        ssd.pytorch layer index: 0..28 the 13 convs, 31 fc6 (3x3 dilated), 33 fc7 (1x1).
        Kernels are OIHW.
    Returns:
      OrderedDict name -> float32 array (HWIO kernels), names and shapes of
      VGG_REDUCED_FC_SHAPES. No channel reversal (the Caffe weights are already BGR).
    """
    groups = collections.defaultdict(dict)
    for key, value in state_dict.items():
        match = _PYTORCH_KEY.match(str(key))
        if match:
            groups[match.group('prefix')][(int(match.group('index')), match.group('kind'))] = value
    needed = {(index, kind) for index in PYTORCH_LAYER_INDICES for kind in ('weight', 'bias')}
    complete = [prefix for prefix, group in groups.items() if needed <= set(group)]
    if not complete:
        raise ValueError(
            'The state dict is not a reduced-fc VGG-16: it lacks layers %s (keys like '
            '"vgg.31.weight" for fc6 and "vgg.33.weight" for fc7); found prefixes %s. Use '
            'ssd.pytorch\'s vgg16_reducedfc.pth, or --from_slim for a full VGG-16.'
            % (sorted(PYTORCH_LAYER_INDICES), sorted(groups) or 'none'))
    preference = ['vgg.', '', 'features.']
    complete.sort(key=lambda p: (preference.index(p) if p in preference else len(preference), p))
    group = groups[complete[0]]

    def to_numpy(value):
        if hasattr(value, 'detach'):  # torch.Tensor
            value = value.detach().cpu().numpy()
        return np.asarray(value, dtype=np.float32)

    out = collections.OrderedDict()
    for index, layer in PYTORCH_LAYER_INDICES.items():
        weights = to_numpy(group[(index, 'weight')])
        if weights.ndim != 4:
            raise ValueError('%s%d.weight has shape %s, not a 4-D OIHW conv kernel; the file '
                             'is not a reduced-fc VGG-16.' % (complete[0], index,
                                                              list(weights.shape)))
        out['%s/%s/weights' % (defaults.VGG16_CHECKPOINT_SCOPE, layer)] = np.ascontiguousarray(
            weights.transpose(2, 3, 1, 0))  # OIHW -> HWIO
        out['%s/%s/biases' % (defaults.VGG16_CHECKPOINT_SCOPE, layer)] = to_numpy(
            group[(index, 'bias')])
    _check_reduced_fc(out)
    return out


def load_pytorch_state_dict(path):
    """Reads a .pth file into {name: np.float32 array}. Needs PyTorch (imported here only)."""
    if not os.path.isfile(path):
        raise ValueError('PyTorch weights file %s does not exist; download ssd.pytorch\'s '
                         'vgg16_reducedfc.pth (see model/README.md) and pass its path.' % path)
    try:
        import torch  # pylint: disable=import-outside-toplevel
    except ImportError:
        raise ValueError('--from_pytorch needs PyTorch, which is not installed; install it '
                         '(e.g. `pip install torch --index-url '
                         'https://download.pytorch.org/whl/cpu`) or convert on a machine that '
                         'has it.') from None
    try:
        state = torch.load(path, map_location='cpu')
    except Exception as error:  # pylint: disable=broad-except
        raise ValueError('Cannot read %s as a PyTorch file (%s: %s); check that it is '
                         'vgg16_reducedfc.pth and not truncated.'
                         % (path, type(error).__name__, error)) from None
    for key in ('state_dict', 'model'):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise ValueError('%s holds a %s, not a state dict; save the model\'s state_dict().'
                         % (path, type(state).__name__))
    return {key: value.detach().cpu().numpy() if hasattr(value, 'detach') else value
            for key, value in state.items()}


def read_checkpoint(path):
    """(prefix, reader) for a TF checkpoint directory/prefix/file (V1 or V2)."""
    prefix = locate.resolve_checkpoint(path)
    return prefix, tf.compat.v1.train.NewCheckpointReader(prefix)


def list_checkpoint(path):
    """[(name, shape list, dtype name)] of every tensor in a checkpoint, sorted by name."""
    _, reader = read_checkpoint(path)
    shapes = reader.get_variable_to_shape_map()
    dtypes = reader.get_variable_to_dtype_map()
    return [(name, list(shapes[name]), dtypes[name].name) for name in sorted(shapes)]


def write_checkpoint(tensors, output_prefix, write_state_file=True):
    """Writes {name: np.ndarray} as a V2 checkpoint at `output_prefix`.

    Also writes '<output dir>/checkpoint' pointing at it (relative path) when write_state_file,
    so the directory can be given as --checkpoint_path. Returns the prefix.
    """
    output_prefix = os.path.abspath(output_prefix)
    directory = os.path.dirname(output_prefix)
    tf.io.gfile.makedirs(directory)
    names = list(tensors)
    with tf.Graph().as_default():
        feeds = [tf.compat.v1.placeholder(tf.as_dtype(np.asarray(tensors[n]).dtype),
                                          np.shape(tensors[n])) for n in names]
        save = tf.raw_ops.SaveV2(prefix=output_prefix, tensor_names=names,
                                 shape_and_slices=[''] * len(names), tensors=feeds)
        with tf.compat.v1.Session() as session:
            session.run(save, feed_dict={f: tensors[n] for f, n in zip(feeds, names)})
    if write_state_file:  # CheckpointState text proto, path relative to the directory
        with tf.io.gfile.GFile(os.path.join(directory, 'checkpoint'), 'w') as state:
            name = os.path.basename(output_prefix)
            state.write('model_checkpoint_path: "%s"\nall_model_checkpoint_paths: "%s"\n'
                        % (name, name))
    return output_prefix


def _output_prefix(output):
    if not output:
        raise ValueError('--output is empty; give a checkpoint prefix such as %s.'
                         % DEFAULT_OUTPUT)
    if output.endswith(os.sep) or os.path.isdir(output):
        return os.path.join(output, 'vgg16_reducedfc')
    return output


def convert_from_slim(slim_path, output=DEFAULT_OUTPUT, reverse_input_channels=True,
                      source_scope=defaults.VGG16_CHECKPOINT_SCOPE):
    """TF-slim vgg_16.ckpt (V1 or V2, file/prefix/directory) -> reduced-fc V2 checkpoint.

    Returns the written prefix.
    """
    try:
        prefix, reader = read_checkpoint(slim_path)
    except ValueError as error:
        raise ValueError('--from_slim: %s is not a readable TF-slim checkpoint (%s). Download '
                         'http://download.tensorflow.org/models/vgg_16_2016_08_28.tar.gz, '
                         'extract it and pass the path of vgg_16.ckpt (see model/README.md).'
                         % (slim_path, str(error).split('. ')[0])) from None
    shapes = reader.get_variable_to_shape_map()
    fc6 = '%s/fc6/weights' % source_scope
    if fc6 not in shapes:
        raise ValueError('%s has no %s; it is not a TF-slim VGG-16 checkpoint (list it with '
                         '--list; set --source_scope if its scope is not %s).'
                         % (prefix, fc6, source_scope))
    if tuple(shapes[fc6]) == _EXPECTED[defaults.VGG16_CHECKPOINT_SCOPE + '/fc6/weights']:
        raise ValueError('%s is already reduced-fc (fc6 %s); no conversion is needed: put it '
                         'in ./model or pass it as --checkpoint_path.' % (prefix, shapes[fc6]))
    missing = [name for name in ('%s/%s/%s' % (source_scope, layer, kind)
                                 for layer in _layer_names() for kind in ('weights', 'biases'))
               if name not in shapes]
    if missing:
        raise ValueError('%s lacks %s; it is not a complete TF-slim VGG-16 checkpoint.'
                         % (prefix, ', '.join(missing)))
    tensors = convert_slim_tensors(reader.get_tensor, reverse_input_channels, source_scope)
    return write_checkpoint(tensors, _output_prefix(output))


def convert_from_pytorch(pth_path, output=DEFAULT_OUTPUT):
    """ssd.pytorch vgg16_reducedfc.pth -> reduced-fc V2 checkpoint. Returns the prefix."""
    tensors = convert_pytorch_state_dict(load_pytorch_state_dict(pth_path))
    return write_checkpoint(tensors, _output_prefix(output))


def _print_listing(path, stream=None):
    stream = stream or sys.stdout
    rows = list_checkpoint(path)
    total = 0
    for name, shape, dtype in rows:
        total += int(np.prod(shape)) if shape else 1
        print('%-45s %-22s %s' % (name, shape, dtype), file=stream)
    print('%d tensors, %d values' % (len(rows), total), file=stream)


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog='python3 -m tools.convert_vgg_weights',
        description='Convert VGG-16 weights into the reduced-fc checkpoint SSD300 restores '
                    '(see model/README.md).')
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument('--from_slim', metavar='VGG_16_CKPT',
                        help="TF-slim's vgg_16.ckpt (full VGG-16, RGB-trained).")
    source.add_argument('--from_pytorch', metavar='PTH',
                        help="ssd.pytorch's vgg16_reducedfc.pth (needs PyTorch).")
    source.add_argument('--list', metavar='CHECKPOINT',
                        help='Print the variables and shapes of a checkpoint and exit.')
    parser.add_argument('--output', default=DEFAULT_OUTPUT,
                        help='Output checkpoint prefix (default %(default)s); a directory gets '
                             'vgg16_reducedfc inside it.')
    parser.add_argument('--keep_channel_order', action='store_true',
                        help='--from_slim: do not reverse conv1_1 input channels (RGB->BGR).')
    parser.add_argument('--source_scope', default=defaults.VGG16_CHECKPOINT_SCOPE,
                        help='--from_slim: variable scope in the source (default %(default)s).')
    args = parser.parse_args(argv)
    try:
        if args.list:
            _print_listing(args.list)
            return 0
        if args.from_slim:
            prefix = convert_from_slim(args.from_slim, args.output,
                                       not args.keep_channel_order, args.source_scope)
        else:
            prefix = convert_from_pytorch(args.from_pytorch, args.output)
    except ValueError as error:
        print('error: %s' % error, file=sys.stderr)
        return 2
    print('Wrote reduced-fc VGG-16 checkpoint %s:' % prefix)
    _print_listing(prefix)
    return 0


if __name__ == '__main__':
    sys.exit(main())
