"""The one SSD anchor spec and the anchor generator built from it.

The spec is a plain JSON-serializable dict; it travels in the Estimator's
`params['anchor_spec']`, and both the input pipeline (target encoding) and the model
(decoding) rebuild the same anchors from it with `generate_anchors(spec)`.

Anchors are `[ymin, xmin, ymax, xmax]`, normalized to the image size, NOT clipped to
[0, 1] (as the original SSD.TensorFlow code: anchors near the border or with extreme aspect
ratios reach outside the image).
"""
import math
import os

import numpy as np

from common import defaults

# The original SSD300's six source maps on a 300x300 input (the backbone's stride-8 and
# stride-16 maps, then conv8..conv11) and the anchor steps it uses for them.
_SSD300_FEATURE_SHAPES = (38, 19, 10, 5, 3, 1)
_SSD300_LAYER_STEPS = (8, 16, 32, 64, 100, 300)


# Named anchor-size presets of SSD300 (fractions of the input side):
#   'voc':  the original SSD.TensorFlow's VOC scales (s_1 = 0.1, then 0.2 .. 0.9), with its
#           rounded extra-square sides (checkpoints of the original decode exactly as there);
#   'coco': the caffe SSD300 COCO model's prior boxes (min_ratio 15, max_ratio 90, first layer
#           7%): min sizes 21, 45, 99, 153, 207, 261 and max sizes 45, 99, 153, 207, 261, 315
#           pixels at 300, i.e. s_k = min_size / 300, extra square sqrt(min_size * max_size) /
#           300 = sqrt(s_k * s_k+1) with s_7 = 315 / 300.
# Aspect ratios (w / h) besides the two squares, per layer (1/3 written 0.3333 as in the
# original code, for the same reason); a fitted preset may give others, as many per layer.
SSD300_RATIOS = ((2.0, 0.5),
                 (2.0, 3.0, 0.5, 0.3333),
                 (2.0, 3.0, 0.5, 0.3333),
                 (2.0, 3.0, 0.5, 0.3333),
                 (2.0, 0.5),
                 (2.0, 0.5))

ANCHOR_PRESETS = {
    'voc': {'anchor_scales': [0.1, 0.2, 0.375, 0.55, 0.725, 0.9],
            'anchor_scale_end': 1.075,
            'extra_anchor_scales': [0.1414, 0.2739, 0.4541, 0.6315, 0.8078, 0.9836]},
    'coco': {'anchor_scales': [21 / 300., 45 / 300., 99 / 300., 153 / 300., 207 / 300.,
                               261 / 300.],
             'anchor_scale_end': 315 / 300.,
             'extra_anchor_scales': None},
    # 'ssdlite': the TF Object Detection API's ssd_mobilenet_v2 / SSDLite sizes, s_k linear
    #            from 0.2 to 0.95 over the six maps, the last extra square sqrt(0.95 * 1.0);
    #            the default of --backbone mobilenet_v2 (maps 19, 10, 5, 3, 2, 1 at 300).
    'ssdlite': {'anchor_scales': [0.2, 0.35, 0.5, 0.65, 0.8, 0.95],
                'anchor_scale_end': 1.0,
                'extra_anchor_scales': None},
}


def check_preset(name):
    """Returns `name` if it is a preset of ANCHOR_PRESETS, or a fitted preset (a dict, see
    `check_fitted_preset`) checked; else ValueError listing the presets."""
    if isinstance(name, dict):
        return check_fitted_preset(name)
    if name not in ANCHOR_PRESETS:
        raise ValueError('unknown anchor preset %r; use one of %s (--anchor_preset), or a '
                         'json file of fitted sizes (python3 -m dataset.report --fit_anchors).'
                         % (name, ', '.join(sorted(ANCHOR_PRESETS))))
    return name


# A fitted preset (python3 -m dataset.report --fit_anchors): the keys of an ANCHOR_PRESETS entry,
# and optionally 'anchor_ratios' (per layer, as many as SSD300's, so the head keeps its shape).
_FITTED_KEYS = ('anchor_scales', 'anchor_scale_end', 'extra_anchor_scales', 'anchor_ratios')


def check_fitted_preset(preset, where='the anchor preset'):
    """Returns `preset` (a dict of fitted SSD300 sizes) if usable, else a one-line ValueError.

    It holds 'anchor_scales' (6 positive fractions of the input side), 'anchor_scale_end'
    (positive), optionally 'extra_anchor_scales' (6 positive, or null for sqrt(s_k * s_k+1))
    and 'anchor_ratios' (6 lists of positive w / h ratios, as many per layer as SSD300's
    [2, 4, 4, 4, 2, 2], so the number of boxes per location, and the head, are SSD300's).
    `where` names the preset in messages (e.g. the json file)."""
    def positive(values):
        return all(isinstance(v, (int, float)) and not isinstance(v, bool) and
                   math.isfinite(v) and v > 0 for v in values)

    if not isinstance(preset, dict):
        raise ValueError('%s is not a json object of anchor sizes; write it with python3 -m '
                         'dataset.report --fit_anchors.' % where)
    unknown = sorted(set(preset) - set(_FITTED_KEYS))
    if unknown:
        raise ValueError('%s has unknown key(s) %s; it may hold only %s.'
                         % (where, ', '.join(unknown), ', '.join(_FITTED_KEYS)))
    layers = len(_SSD300_FEATURE_SHAPES)
    scales = preset.get('anchor_scales')
    if not isinstance(scales, list) or len(scales) != layers or not positive(scales):
        raise ValueError('%s needs "anchor_scales": %d positive numbers (one per feature map), '
                         'got %r.' % (where, layers, scales))
    if not positive([preset.get('anchor_scale_end')]):
        raise ValueError('%s needs a positive "anchor_scale_end", got %r.'
                         % (where, preset.get('anchor_scale_end')))
    extra = preset.get('extra_anchor_scales')
    if extra is not None and (not isinstance(extra, list) or len(extra) != layers or
                              not positive(extra)):
        raise ValueError('%s: "extra_anchor_scales" must be null or %d positive numbers, got '
                         '%r.' % (where, layers, extra))
    ratios = preset.get('anchor_ratios')
    if ratios is not None:
        counts = [len(r) for r in SSD300_RATIOS]
        if (not isinstance(ratios, list) or len(ratios) != layers or
                not all(isinstance(r, list) and positive(r) for r in ratios) or
                [len(r) for r in ratios] != counts):
            raise ValueError('%s: "anchor_ratios" must be %d lists of positive ratios with %s '
                             'values (the boxes per location of SSD300\'s head), got %r.'
                             % (where, layers, counts, ratios))
    return preset


def read_preset_file(path):
    """The fitted preset (dict) in json file `path`, checked (`check_fitted_preset`).
    ValueError (one line naming the file and the fix) when it is missing or unusable."""
    import json
    try:
        with open(path, 'r', encoding='utf-8') as f:
            preset = json.load(f)
    except OSError as e:
        raise ValueError('cannot read the anchor preset file %s (%s); write it with python3 -m '
                         'dataset.report --data_dir <records> --fit_anchors %s.'
                         % (path, e.strerror or e, path))
    except ValueError as e:
        raise ValueError('the anchor preset file %s is not valid json (%s); write it again with '
                         'python3 -m dataset.report --fit_anchors.' % (path, e))
    return check_fitted_preset(preset, where='anchor preset file %s' % path)


def is_preset_file(value):
    """True when an --anchor_preset value names a json file rather than an ANCHOR_PRESETS name."""
    return isinstance(value, str) and value not in ANCHOR_PRESETS and (
        value.endswith('.json') or os.path.sep in value)


def ssd300_anchor_spec(feature_shapes=_SSD300_FEATURE_SHAPES, image_size=defaults.IMAGE_SIZE,
                       preset=defaults.ANCHOR_PRESET):
    """The SSD300 anchor spec for a network whose six source maps are `feature_shapes` cells a
    side on an `image_size` input (net/ssd_net.feature_shapes(backbone, image_size)), with the
    anchor sizes of `preset` (ANCHOR_PRESETS: 'voc' or 'coco'; or a fitted preset dict,
    `check_fitted_preset`, whose ratios, if given, replace SSD300's).

    Ratios (unless the fitted preset gives them), offsets and prior scaling are SSD300's
    whatever the backbone. Each layer's step (cell pitch in pixels) is the original's
    [8, 16, 32, 64, 100, 300] where the size and image size are SSD300's (so every backbone,
    at 300x300, gets exactly SSD300_SPEC), and image_size / size otherwise.

    Returns a new JSON-serializable dict; ValueError unless there are 6 positive sizes.
    """
    shapes = [int(s) for s in feature_shapes]
    if len(shapes) != len(_SSD300_FEATURE_SHAPES) or min(shapes) < 1:
        raise ValueError('SSD300 anchors need 6 positive feature-map sizes, got %s; the '
                         'backbone must give two source maps (strides 8 and 16) before the '
                         'four extra layers.' % (list(feature_shapes),))
    steps = [step if (size == ref and int(image_size) == defaults.IMAGE_SIZE)
             else float(image_size) / size
             for size, ref, step in zip(shapes, _SSD300_FEATURE_SHAPES, _SSD300_LAYER_STEPS)]
    sizes = check_preset(preset)
    sizes = sizes if isinstance(sizes, dict) else ANCHOR_PRESETS[sizes]
    spec = {
        'image_size': int(image_size),
        'feature_shapes': shapes,
        'layer_steps': steps,
        'anchor_offset': 0.5,
        # s_k of each layer: the square anchor of side s_k and the ratio-r anchors of area s_k^2.
        'anchor_scales': list(sizes['anchor_scales']),
        # The notional s_7 that follows the last layer: the last layer's extra square anchor
        # has side sqrt(s_6 * s_7) (every other layer uses sqrt(s_k * s_{k+1})).
        'anchor_scale_end': sizes['anchor_scale_end'],
        # Aspect ratios (w / h) besides the two squares, per layer (SSD300_RATIOS).
        'anchor_ratios': [list(r) for r in sizes.get('anchor_ratios') or SSD300_RATIOS],
        # Box-code variances: (cy, cx, h, w) offsets are divided by these when encoding.
        'prior_scaling': [0.1, 0.1, 0.2, 0.2],
    }
    if sizes.get('extra_anchor_scales') is not None:
        # The extra squares' sides given explicitly (they then win over the formula): the
        # 'voc' preset keeps the original SSD.TensorFlow values, sqrt(s_k * s_{k+1}) rounded
        # to 4 digits, so checkpoints trained by the original decode exactly as there.
        spec['extra_anchor_scales'] = list(sizes['extra_anchor_scales'])
    return spec


# SSD300 on a 300x300 input (any backbone of net/backbones.py: VGG-16 conv4_3, fc7, or a
# ResNet's stride-8 and stride-16 stages, then four extra layers).
SSD300_SPEC = ssd300_anchor_spec()

_LAYER_KEYS = ('feature_shapes', 'layer_steps', 'anchor_scales', 'anchor_ratios')
_REQUIRED_KEYS = _LAYER_KEYS + ('image_size', 'anchor_offset', 'anchor_scale_end',
                                'prior_scaling')


def validate_spec(spec):
    """Raises ValueError naming the problem if `spec` is not a usable anchor spec."""
    missing = [k for k in _REQUIRED_KEYS if k not in spec]
    if missing:
        raise ValueError('anchor spec lacks %s; start from net.anchors.SSD300_SPEC and '
                         'override only the keys you change.' % ', '.join(missing))
    lengths = {k: len(spec[k]) for k in _LAYER_KEYS}
    if len(set(lengths.values())) != 1:
        raise ValueError('anchor spec has per-layer lists of different lengths %s; give one '
                         'entry per feature map in each of them.' % lengths)
    extra = spec.get('extra_anchor_scales')
    if extra is not None and len(extra) != lengths['feature_shapes']:
        raise ValueError('anchor spec extra_anchor_scales has %d values for %d layers; give one '
                         'per feature map, or drop the key to use sqrt(s_k * s_k+1).'
                         % (len(extra), lengths['feature_shapes']))
    if len(spec['prior_scaling']) != 4:
        raise ValueError('anchor spec prior_scaling has %d values; give 4 (cy, cx, h, w).'
                         % len(spec['prior_scaling']))


def extra_anchor_scales(spec):
    """Side of the extra square anchor per layer.

    `spec['extra_anchor_scales']` when the spec gives it (SSD300_SPEC: the original's
    [0.1414, 0.2739, 0.4541, 0.6315, 0.8078, 0.9836]), else sqrt(s_k * s_{k+1}) with
    s_{L+1} = anchor_scale_end. Returns a list of floats, one per layer.
    """
    if spec.get('extra_anchor_scales') is not None:
        return [float(v) for v in spec['extra_anchor_scales']]
    scales = list(spec['anchor_scales']) + [spec['anchor_scale_end']]
    return [math.sqrt(scales[k] * scales[k + 1]) for k in range(len(scales) - 1)]


def anchors_per_location(spec):
    """Anchors per feature-map cell, per layer: 2 squares + one per ratio; SSD300: [4,6,6,6,4,4]."""
    validate_spec(spec)
    return [2 + len(ratios) for ratios in spec['anchor_ratios']]


def anchors_per_layer(spec):
    """Anchors per layer (H * W * k); SSD300: [5776, 2166, 600, 150, 36, 4]."""
    return [int(size) * int(size) * k
            for size, k in zip(spec['feature_shapes'], anchors_per_location(spec))]


def num_anchors(spec):
    """Total anchor count A; SSD300: 8732."""
    return int(sum(anchors_per_layer(spec)))


def layer_anchor_sizes(spec, layer):
    """(heights, widths) of the anchor types of one layer, normalized, in anchor-type order.

    Order, as in the original SSD.TensorFlow code (its trained heads depend on it):
    [extra square (sqrt(s_k * s_{k+1})), s_k square, ratio r for r in anchor_ratios[layer]];
    a ratio-r anchor has h = s_k / sqrt(r), w = s_k * sqrt(r) (r = w / h).
    Returns two float64 numpy arrays of shape [k].
    """
    scale = float(spec['anchor_scales'][layer])
    extra = extra_anchor_scales(spec)[layer]
    heights = [extra, scale] + [scale / math.sqrt(r) for r in spec['anchor_ratios'][layer]]
    widths = [extra, scale] + [scale * math.sqrt(r) for r in spec['anchor_ratios'][layer]]
    return np.array(heights, np.float64), np.array(widths, np.float64)


def generate_anchors(spec):
    """All anchors of `spec` as a numpy float32 array [A, 4] of [ymin, xmin, ymax, xmax].

    Order: layer, then row y, then column x, then anchor type (see `layer_anchor_sizes`),
    which matches a head output [B, H, W, k * 4] reshaped to [B, H * W * k, 4] and
    concatenated over layers. The centre of cell (y, x) is
    ((y + offset) * step / image_size, (x + offset) * step / image_size). Not clipped.
    """
    validate_spec(spec)
    image_size = float(spec['image_size'])
    offset = float(spec['anchor_offset'])
    layers = []
    for layer, (size, step) in enumerate(zip(spec['feature_shapes'], spec['layer_steps'])):
        centres = (np.arange(int(size), dtype=np.float64) + offset) * float(step) / image_size
        cy, cx = np.meshgrid(centres, centres, indexing='ij')  # [H, W]
        heights, widths = layer_anchor_sizes(spec, layer)  # [k]
        cy = cy[:, :, None]
        cx = cx[:, :, None]
        half_h = heights[None, None, :] / 2.0
        half_w = widths[None, None, :] / 2.0
        boxes = np.stack(np.broadcast_arrays(cy - half_h, cx - half_w, cy + half_h, cx + half_w),
                         axis=-1)  # [H, W, k, 4]
        layers.append(boxes.reshape(-1, 4))
    return np.concatenate(layers, axis=0).astype(np.float32)
