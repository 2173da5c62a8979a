"""SSD300 image preprocessing: training augmentation and evaluation resize (TF ops).

Both entry points work on ONE image and are meant to run inside a `tf.data` map
(graph functions, no Python randomness).

Training augmentation follows the SSD paper (Liu et al., 2016, section 3.6):

1. zoom-out: with probability `ZOOM_OUT_PROB` the image is placed at a random
   position on a canvas `r` times its size, `r ~ U[1, MAX_ZOOM_OUT]`, filled with
   the mean colour;
2. IoU-constrained random crop: one of `CROP_MIN_IOU_CHOICES` is drawn uniformly;
   `None` keeps the whole (zoomed) image, a number `t` asks for a crop in which at
   least one ground-truth box has IoU >= t with the crop and its centre inside it
   (`t = 0` is an unconstrained crop).  `NUM_CROP_TRIALS` candidates are drawn at
   once, side scale in `CROP_SCALE_RANGE` and aspect (width / height, in
   normalized units) in `CROP_ASPECT_RANGE` of the zoomed image; the first one
   that qualifies wins, and if none does the whole zoomed image is kept.  Boxes
   whose centres fall inside the crop are kept, clipped to it and renormalized;
3. horizontal flip with probability `FLIP_PROB`;
4. resize to `out_size x out_size`;
5. photometric distortion, each part applied with probability `PHOTOMETRIC_PROB`:
   brightness (add up to +-`BRIGHTNESS_MAX_DELTA`), contrast (scale about the mean
   luminance by `CONTRAST_RANGE`), saturation (blend with the pixel's luminance,
   `SATURATION_RANGE`) and hue (rotate the YIQ chroma plane by up to
   +-`HUE_MAX_DELTA`), i.e. cheap affine forms of the paper's HSV operations.  They
   commute (see `_photometric_affine`), so they are composed into one 3x3 colour
   map plus offset and clipped to [0, 255] once; the paper's random order would
   only change where intermediate clipping happens;
6. mean subtraction (`mean_rgb`, default `MEAN_RGB`) and channel reordering (BGR by
   default, the order the reduced-fc VGG-16 weights expect).  Both are the backbone's
   input convention: net/backbones.py states them per backbone and the callers pass
   params['channel_order'] / params['mean_rgb'] (ResNets: RGB, the same mean).

For speed, steps 1-4 sample the source image once: zoom-out, crop and flip are
composed into one sampling window expressed in the original image's normalized
coordinates (it extends outside [0, 1] when zoomed out, and has xmin > xmax when
flipped) and a single `tf.image.crop_and_resize` samples that window straight to
`out_size x out_size`.  Pixels outside the image come back as the sentinel `-1`
(impossible for uint8 data), which marks them exactly so they are set to the mean
(0 after mean subtraction); the colour map, clipping, mean subtraction, channel
order and that fill then run on the small resized image as two fused 1x1
convolutions, and never alter the fill.

Sampling geometry (train and eval alike) is the original SSD.TensorFlow code's:
TF1 bilinear resizing without corner alignment and without half-pixel centres
(`tf.compat.v1.image.resize_bilinear(align_corners=False)`): output pixel `i` of
a resize from `S` to `out` pixels reads source pixel index `i * S / out`, the
interpolation clamped to the last pixel.  A checkpoint trained by the original
(or here) sees its images with the geometry it was trained on; an "align
corners" resize would shift them by up to half an output pixel.
  - Eval (`preprocess_for_eval`) is exactly that resize of the whole image.
  - Train: the original converts the image to float [0, 1], distorts colours,
    optionally zooms out onto a mean-coloured canvas (integer offsets), takes an
    integer-pixel IoU crop, flips, then resizes the crop with the same TF1
    bilinear resize (and rounds back to uint8).  Here the crop window [a, b]
    (normalized edges, a*S and b*S in source pixels) is sampled at source index
    `a * S + i * (b - a) * S / out` (flipped: `b * S - 1 - i * (b - a) * S / out`,
    i.e. the flipped crop resized), with one edge-replicated pixel around the
    image giving the TF1 clamping at the borders.  What differs, and cannot matter
    for trained checkpoints (it is random augmentation): crop and zoom-out
    offsets are continuous rather than whole pixels, an upscaled crop's last
    samples interpolate into the image beyond the crop (the original clamps to
    the crop's last row / column), the zoom-out canvas edge is
    hard (a source pixel beyond the image is the mean, not a blend of the edge
    pixel and the mean), the photometric steps are the affine forms above, and
    the output is not rounded to integers.

Randomness: all random numbers come from stateless ops keyed by one int32 seed
pair, so a given key always gives the same augmentation.  `seed` may be
  - None: a fresh key is drawn per call (per dataset element) from an unseeded
    stateful op;
  - a Python int: a key is drawn per call from a stateful op with that op seed,
    giving a reproducible sequence of different augmentations;
  - an int tensor / sequence of shape [2]: used directly as the key (exact
    reproducibility of one augmentation; handy in tests).
"""

import numpy as np
import tensorflow as tf

from common import defaults
from net import anchor_manipulator
from net import anchors as anchor_lib
from net import backbones

# ---------------------------------------------------------------------------
# Normalization defaults (VGG-16's; each backbone's own live in net/backbones.py and
# reach the functions below through params['channel_order'] / params['mean_rgb']).
# ---------------------------------------------------------------------------
MEAN_RGB = backbones.BACKBONES[defaults.BACKBONE].mean_rgb
"""Default per-channel mean (the default backbone's, VGG-16), in R, G, B order (0-255 scale)."""

DEFAULT_CHANNEL_ORDER = backbones.BACKBONES[defaults.BACKBONE].channel_order
"""Default channel order of the network input: the reduced-fc VGG-16 weights expect BGR."""

IMAGE_SIZE = anchor_lib.SSD300_SPEC['image_size']
"""Default output side: the anchor spec's input size (SSD300: 300)."""

CHANNEL_ORDERS = ('bgr', 'rgb')

# ---------------------------------------------------------------------------
# Augmentation hyper-parameters (SSD paper values).
# ---------------------------------------------------------------------------
ZOOM_OUT_PROB = 0.5
MAX_ZOOM_OUT = 4.0
CROP_MIN_IOU_CHOICES = (None, 0.0, 0.1, 0.3, 0.5, 0.7, 0.9)
CROP_SCALE_RANGE = (0.3, 1.0)
CROP_ASPECT_RANGE = (0.5, 2.0)
NUM_CROP_TRIALS = 50
FLIP_PROB = 0.5
PHOTOMETRIC_PROB = 0.5
BRIGHTNESS_MAX_DELTA = 32.0            # on the 0-255 scale
CONTRAST_RANGE = (0.5, 1.5)
SATURATION_RANGE = (0.5, 1.5)
HUE_MAX_DELTA = 18.0 / 360.0           # 18 degrees, as a fraction of the hue circle

_LUMA_WEIGHTS = np.array([0.299, 0.587, 0.114], np.float32)   # ITU-R BT.601
_RGB_TO_YIQ = np.array([[0.299, 0.587, 0.114],
                        [0.595716, -0.274453, -0.321263],
                        [0.211456, -0.522591, 0.311135]], np.float32)


def _hue_basis(channel_order):
    """float32 [3, 3, 3]: the row-vector forms (x @ B) of L, I - L and S, output channels in
    `channel_order`: a hue rotation by theta is L + cos(theta) (I - L) + sin(theta) S in
    RGB, with L = 1 w^T (w = luma weights) and S the chroma-plane quarter turn."""
    yiq = _RGB_TO_YIQ.astype(np.float64)
    inv = np.linalg.inv(yiq)
    luma = inv @ np.diag([1., 0., 0.]) @ yiq
    chroma = inv @ np.diag([0., 1., 1.]) @ yiq
    quarter_turn = inv @ np.array([[0., 0., 0.], [0., 0., -1.], [0., 1., 0.]]) @ yiq
    basis = np.stack([luma.T, chroma.T, quarter_turn.T])    # row-vector form: x @ A^T
    if channel_order == 'bgr':
        basis = basis[:, :, ::-1]
    return basis.astype(np.float32)
_MEAN_GRID = 32    # side of the sample grid on which the contrast reference mean is taken
_OUTSIDE = -1.0  # crop_and_resize extrapolation sentinel; uint8 pixels are >= 0
_INT32_MAX = 2 ** 31 - 1


def _check_channel_order(channel_order):
    if channel_order not in CHANNEL_ORDERS:
        raise ValueError('channel_order must be one of %s, got %r; pass "bgr" for the '
                         'VGG-16 reduced-fc weights or "rgb".' % (CHANNEL_ORDERS, channel_order))


def _mean_rgb(mean_rgb):
    """`mean_rgb` as a tuple of 3 floats (None: MEAN_RGB); ValueError otherwise."""
    if mean_rgb is None:
        return tuple(MEAN_RGB)
    mean = tuple(float(v) for v in mean_rgb)
    if len(mean) != 3:
        raise ValueError('mean_rgb must be 3 numbers (R, G, B on the 0-255 scale), got %r; it '
                         'comes from the backbone (params["mean_rgb"]).' % (mean_rgb,))
    return mean


def channel_mean(channel_order=DEFAULT_CHANNEL_ORDER, mean_rgb=None):
    """The mean (0-255 scale) as a tuple of 3 floats in `channel_order` ('bgr' or 'rgb').

    mean_rgb: the backbone's mean in R, G, B order (params['mean_rgb']); None: MEAN_RGB.
    """
    _check_channel_order(channel_order)
    mean = _mean_rgb(mean_rgb)
    return tuple(mean[::-1]) if channel_order == 'bgr' else mean


def denormalize_image(image, channel_order=DEFAULT_CHANNEL_ORDER, mean_rgb=None):
    """Undoes the network-input normalization, for drawing (the training summary image).

    Args:
      image: float tensor or array [..., H, W, 3], mean-subtracted, channels in
        `channel_order`.
      channel_order: 'bgr' or 'rgb', as given to the preprocessing.
      mean_rgb: the mean given to the preprocessing (None: MEAN_RGB).
    Returns:
      uint8 tensor [..., H, W, 3] in RGB order, values rounded (half to even) and clipped to
      [0, 255].
    """
    image = tf.convert_to_tensor(image, tf.float32) + tf.constant(
        channel_mean(channel_order, mean_rgb), tf.float32)
    if channel_order == 'bgr':
        image = image[..., ::-1]
    return tf.cast(tf.clip_by_value(tf.round(image), 0.0, 255.0), tf.uint8)


def _check_image(image, fn_name):
    image = tf.convert_to_tensor(image)
    if image.dtype != tf.uint8:
        raise ValueError('%s expects a uint8 RGB image, got dtype %s; pass the decoded '
                         'image (tf.io.decode_jpeg output) without converting it.'
                         % (fn_name, image.dtype.name))
    if image.shape.rank is not None and image.shape.rank != 3:
        raise ValueError('%s expects one image of shape [H, W, 3], got shape %s; map it '
                         'over a dataset of single images, not batches.' % (fn_name, image.shape))
    if image.shape.rank == 3 and image.shape[-1] is not None and image.shape[-1] != 3:
        raise ValueError('%s expects 3 RGB channels, got shape %s; decode with channels=3.'
                         % (fn_name, image.shape))
    return image


def _pad_edges(image):
    """uint8 [H, W, 3] -> [H + 2, W + 2, 3], one edge-replicated pixel on every side."""
    return tf.pad(image, [[1, 1], [1, 1], [0, 0]], mode='SYMMETRIC')


def _sample_positions(edge_a, edge_b, size, out_size):
    """Source pixel indices of the first and last of `out_size` TF1 (non-aligned) bilinear
    samples of the window edges [edge_a, edge_b] (normalized) on an axis of `size` pixels.

    edge_a <= edge_b: the crop [a * size, b * size) resized, first = a * size;
    edge_a > edge_b (a flip): the mirrored crop resized, first = a * size - 1.
    The step is (b - a) * size / out_size either way (negative when flipped).
    """
    step = (edge_b - edge_a) * size / out_size
    first = edge_a * size - tf.cast(edge_a > edge_b, tf.float32)
    return first, first + (out_size - 1) * step


def _resize_window(padded, window, out_size, extrapolation_value):
    """Samples window [ymin, xmin, ymax, xmax] (normalized edges, may exceed [0, 1]; xmin >
    xmax flips) of an image to float32 [out_size, out_size, 3] with TF1 non-aligned bilinear
    sampling (see the module docstring).

    padded: uint8 [H + 2, W + 2, 3], the image with one edge-replicated pixel on every side
    (`_pad_edges`): samples within one pixel outside the image clamp to the edge pixel as in
    TF1, farther ones are `extrapolation_value`.
    """
    shape = tf.cast(tf.shape(padded)[:2] - 2, tf.float32)
    height, width = shape[0], shape[1]
    y0, x0, y1, x1 = tf.unstack(tf.reshape(window, [4]))
    first_y, last_y = _sample_positions(y0, y1, height, out_size)
    first_x, last_x = _sample_positions(x0, x1, width, out_size)
    # crop_and_resize samples edge v at v * (padded size - 1): padded index = source + 1.
    box = tf.stack([(first_y + 1.) / (height + 1.), (first_x + 1.) / (width + 1.),
                    (last_y + 1.) / (height + 1.), (last_x + 1.) / (width + 1.)])
    return tf.image.crop_and_resize(
        padded[tf.newaxis], box[tf.newaxis], tf.zeros([1], tf.int32),
        [out_size, out_size], method='bilinear',
        extrapolation_value=extrapolation_value)[0]


def preprocess_for_eval(image, out_size=IMAGE_SIZE, channel_order=DEFAULT_CHANNEL_ORDER,
                        mean_rgb=None):
    """Evaluation preprocessing: resize and mean subtraction only.

    Args:
      image: uint8 [H, W, 3], RGB.
      out_size: output side in pixels.
      channel_order: 'bgr' (default, VGG-16 reduced-fc) or 'rgb'.
      mean_rgb: per-channel mean (R, G, B, 0-255) to subtract; None: MEAN_RGB. The
        backbone's input convention (params['channel_order'], params['mean_rgb']).
    Returns:
      float32 [out_size, out_size, 3]: the whole image resized as the original code does,
      `tf.compat.v1.image.resize_bilinear(align_corners=False)` (no half-pixel centres:
      output pixel i reads source index i * in / out), minus the mean, channels in
      `channel_order`.  Normalized boxes of the input stay valid for the output unchanged.
    """
    _check_channel_order(channel_order)
    with tf.name_scope('preprocess_for_eval'):
        image = _check_image(image, 'preprocess_for_eval')
        out = normalize_for_network(resize_for_eval(image[tf.newaxis], out_size),
                                    channel_order, mean_rgb)[0]
        out.set_shape([out_size, out_size, 3])
        return out


def resize_for_eval(images, out_size=IMAGE_SIZE):
    """The first half of preprocess_for_eval: uint8 or float [B, H, W, 3] RGB -> float32
    [B, out_size, out_size, 3] RGB on the 0-255 scale,
    `tf.compat.v1.image.resize_bilinear(align_corners=False, half_pixel_centers=False)`.
    The TFLite models take this as their input (utility/inference/tflite_export.py)."""
    return tf.compat.v1.image.resize_bilinear(images, [out_size, out_size],
                                              align_corners=False, half_pixel_centers=False)


def normalize_for_network(resized, channel_order=DEFAULT_CHANNEL_ORDER, mean_rgb=None):
    """The second half of preprocess_for_eval: float32 [B, S, S, 3] RGB 0-255 -> the
    network's input: channels in `channel_order`, minus the mean (one fused 1x1 convolution:
    a permutation kernel and a bias)."""
    _check_channel_order(channel_order)
    kernel = np.eye(3, dtype=np.float32)
    if channel_order == 'bgr':
        kernel = kernel[:, ::-1].copy()
    bias = -np.asarray(channel_mean(channel_order, mean_rgb), np.float32)
    out = tf.nn.conv2d(tf.cast(resized, tf.float32), kernel[np.newaxis, np.newaxis], 1, 'VALID')
    return tf.nn.bias_add(out, bias)


# ---------------------------------------------------------------------------
# Training augmentation.
# ---------------------------------------------------------------------------
def _seed_key(seed):
    """int32 [2] stateless key from None / Python int / [2] tensor (see module doc)."""
    if seed is None or isinstance(seed, (int, np.integer)):
        op_seed = None if seed is None else int(seed)
        return tf.random.uniform([2], maxval=_INT32_MAX, dtype=tf.int32, seed=op_seed)
    key = tf.convert_to_tensor(seed)
    if not key.dtype.is_integer:
        raise ValueError('seed must be None, a Python int or an integer tensor of shape [2], '
                         'got dtype %s; cast the seed to int32.' % key.dtype.name)
    if key.shape.is_fully_defined() and key.shape.as_list() != [2]:
        raise ValueError('a tensor seed must have shape [2], got %s; pass a seed pair '
                         '[a, b] or a Python int.' % key.shape)
    return tf.cast(tf.reshape(key, [2]), tf.int32)


def _overlaps(windows, boxes):
    """Pairwise geometry of windows [T, 4] and boxes [N, 4] (both [ymin, xmin, ymax, xmax]).

    Returns (iou float32 [T, N]: net/anchor_manipulator.iou_matrix, the one IoU of normalized
    boxes, 0 where the union is empty; centre_inside bool [T, N], whether the box centre lies
    strictly inside the window).
    """
    w_min, w_max = tf.split(windows[:, tf.newaxis, :], 2, axis=-1)       # [T, 1, 2]
    b_min, b_max = tf.split(boxes, 2, axis=-1)                            # [N, 2]
    centre = 0.5 * (b_min + b_max)
    inside = tf.reduce_all((centre > w_min) & (centre < w_max), axis=-1)
    return anchor_manipulator.iou_matrix(windows, boxes), inside


def _zoom_out_canvas(u):
    """Random zoom-out canvas in the image's normalized coordinates: float32 [4].

    u: float32 [4] uniform [0, 1) numbers.  With probability ZOOM_OUT_PROB the canvas is
    `r` times the image (r ~ U[1, MAX_ZOOM_OUT]) with the image at a uniform random
    position on it, i.e. [-oy, -ox, r - oy, r - ox], oy, ox ~ U[0, r - 1]; otherwise it is
    the image itself, [0, 0, 1, 1].
    """
    u_apply, u_ratio, u_offset = tf.split(u, [1, 1, 2])
    ratio = 1. + tf.cast(u_apply < ZOOM_OUT_PROB, tf.float32) * u_ratio * (MAX_ZOOM_OUT - 1.)
    offset = u_offset * (ratio - 1.)                                     # [oy, ox]
    return tf.concat([-offset, ratio - offset], axis=0)


def _crop_window(boxes, canvas, min_iou, u):
    """IoU-constrained random crop of `canvas` (both in the image's normalized coordinates).

    NUM_CROP_TRIALS candidates are drawn at once: side scale s = sqrt(h * w) in
    CROP_SCALE_RANGE and aspect w / h (log-uniform) in CROP_ASPECT_RANGE, both relative to
    the canvas, limited so that no side exceeds the canvas.  The first candidate whose IoU
    with some box is >= `min_iou` while that box's centre lies inside it is returned.  With
    no boxes, a candidate only has to be centred on the image.  If no candidate qualifies,
    or `min_iou` < 0 (the "keep the whole image" choice), the canvas is returned.

    Args:
      boxes: float32 [N, 4]; canvas: float32 [4]; min_iou: float32 scalar;
      u: float32 [T, 4] uniform [0, 1) numbers, one row per candidate.
    Returns:
      float32 [4] window [ymin, xmin, ymax, xmax].
    """
    u_scale, u_aspect, u_position = tf.split(u, [1, 1, 2], axis=1)
    min_scale, max_scale = CROP_SCALE_RANGE
    scale = min_scale + u_scale * (max_scale - min_scale)                # [T, 1]
    area = tf.square(scale)
    log_lo = tf.math.log(tf.maximum(CROP_ASPECT_RANGE[0], area))
    log_hi = tf.math.log(tf.minimum(CROP_ASPECT_RANGE[1], 1. / area))
    half_log_aspect = 0.5 * (log_lo + u_aspect * (log_hi - log_lo))
    # [h, w] = scale * [1 / sqrt(aspect), sqrt(aspect)], in canvas units.
    hw = tf.minimum(scale * tf.exp(half_log_aspect * tf.constant([-1., 1.])), 1.)  # [T, 2]
    canvas_min, canvas_max = tf.split(canvas, 2)
    canvas_size = canvas_max - canvas_min
    top_left = u_position * (1. - hw) * canvas_size + canvas_min
    candidates = tf.concat([top_left, top_left + hw * canvas_size], axis=1)   # [T, 4]

    iou, centre_inside = _overlaps(candidates, boxes)
    ok = tf.reduce_any((iou >= min_iou) & centre_inside, axis=1)
    on_image = _overlaps(candidates, tf.constant([[0., 0., 1., 1.]]))[1][:, 0]
    qualifies = tf.where(tf.shape(boxes)[0] > 0, ok, on_image)
    found = tf.reduce_any(qualifies) & (min_iou >= 0.)
    first = tf.argmax(tf.cast(qualifies, tf.int32), output_type=tf.int32)
    return tf.where(found, tf.gather(candidates, first), canvas)


def _sample_window(boxes, u_zoom, u_mode, u_trials):
    """Zoom-out + IoU-constrained crop as one window in the original image's normalized
    coordinates.  boxes [N, 4]; u_zoom [4], u_mode scalar, u_trials [T, 4] uniform [0, 1)
    -> window float32 [4] = [ymin, xmin, ymax, xmax]."""
    choices = [-1. if c is None else float(c) for c in CROP_MIN_IOU_CHOICES]
    mode = tf.minimum(tf.cast(u_mode * len(choices), tf.int32), len(choices) - 1)
    min_iou = tf.gather(tf.constant(choices, tf.float32), mode)
    return _crop_window(boxes, _zoom_out_canvas(u_zoom), min_iou, u_trials)


def _boxes_in_window(boxes, labels, window):
    """Keeps the boxes whose centre lies inside `window`, clipped and renormalized to it.

    boxes [N, 4], labels [N], window [4] (normalized, ymin < ymax, xmin < xmax)
    -> (boxes [M, 4] in [0, 1] with positive sides, labels [M]).
    """
    keep = _overlaps(window[tf.newaxis], boxes)[1][0]
    w_min, w_max = tf.split(window, 2)
    new_boxes = tf.clip_by_value((boxes - tf.tile(w_min, [2])) / tf.tile(w_max - w_min, [2]),
                                 0., 1.)
    new_min, new_max = tf.split(new_boxes, 2, axis=1)
    keep &= tf.reduce_all(new_max > new_min, axis=1)
    return tf.boolean_mask(new_boxes, keep), tf.boolean_mask(labels, keep)


def _flip_left_right(boxes, window, flip):
    """Horizontal flip when `flip` (bool scalar): boxes [M, 4] are mirrored (x -> 1 - x) and
    the window's x edges swapped, which makes crop_and_resize sample it mirrored."""
    mirrored = tf.constant([0., 1., 0., 1.]) + boxes * tf.constant([1., -1., 1., -1.])
    boxes = tf.where(flip, tf.gather(mirrored, [0, 3, 2, 1], axis=1), boxes)
    window = tf.where(flip, tf.gather(window, [0, 3, 2, 1]), window)
    return boxes, window


def _photometric_params(u):
    """Random photometric parameters from u: float32 [8] uniform [0, 1) numbers.

    Returns float32 [4]: brightness delta (0-255 scale), contrast factor, saturation factor,
    hue delta (fraction of the circle); each operation is applied with probability
    PHOTOMETRIC_PROB and otherwise gets its identity value (0, 1, 1, 0).
    """
    u_apply, u_value = tf.split(u, 2)
    lo = tf.constant([-BRIGHTNESS_MAX_DELTA, CONTRAST_RANGE[0], SATURATION_RANGE[0],
                      -HUE_MAX_DELTA])
    hi = tf.constant([BRIGHTNESS_MAX_DELTA, CONTRAST_RANGE[1], SATURATION_RANGE[1],
                      HUE_MAX_DELTA])
    return tf.where(u_apply < PHOTOMETRIC_PROB, lo + u_value * (hi - lo),
                    tf.constant([0., 1., 1., 0.]))


def _photometric_affine(params, luma_mean, channel_order='rgb'):
    """The photometric distortion as one affine colour map (0-255 scale).

    For an RGB pixel row vector x the distorted pixel is `x @ m + b`, its channels in
    `channel_order` (the map's columns are permuted accordingly).  In column form, with
    `A = m^T` (RGB out): every operation is affine: brightness adds `delta`; contrast
    scales about the mean luminance, `c (x - mu) + mu`; saturation blends with the pixel's
    luminance, `f x + (1 - f) L x` with `L = 1 w^T`, `w` the ITU-R BT.601 luma weights; hue
    rotates the chroma plane (I, Q) of YIQ by `hue * 360` degrees, `H = L + cos (I - L) +
    sin S`.  All four keep grey grey, saturation and hue keep the luminance, and they
    commute, so any order gives the same map (the paper's random order only mattered
    through clipping between the steps; here the result is clipped once, at the end):
    `A = c (L + f cos (I - L) + f sin S)`, `b = ((1 - c) mu + delta) 1`.

    Args:
      params: float32 [4]: brightness delta, contrast factor c, saturation factor f, hue
        delta (fraction of the circle); see `_photometric_params`.
      luma_mean: float32 scalar, mean luminance mu of the image (0-255).
      channel_order: 'rgb' or 'bgr', the order of the output channels.
    Returns:
      (m float32 [3, 3], b float32 [3]).
    """
    delta, contrast, saturation, hue = tf.unstack(params)
    theta = 2. * np.pi * hue
    coeffs = contrast * tf.stack([1., saturation * tf.cos(theta), saturation * tf.sin(theta)])
    m = tf.reduce_sum(coeffs[:, tf.newaxis, tf.newaxis] * _hue_basis(channel_order), axis=0)
    b = tf.fill([3], (1. - contrast) * luma_mean + delta)
    return m, b


def _conv1x1(image, kernel, bias):
    """[H, W, Cin] x [Cin, Cout] + [Cout] -> [H, W, Cout] as a 1x1 convolution with bias
    (one fused pass; per-channel broadcasts of a 300x300 image are several times slower)."""
    out = tf.nn.conv2d(image[tf.newaxis], kernel[tf.newaxis, tf.newaxis], 1, 'VALID')
    return tf.nn.bias_add(out, bias)[0]


def _colour_and_normalize(resized, m, b, channel_order, mean_rgb=None):
    """out = clip(x @ m + b, 0, 255) - mean inside the image and 0 outside (to float
    rounding, |out| < 1e-4); m [3, 3] and b [3] already give `channel_order` outputs.

    resized: float32 [H, W, 3] RGB from crop_and_resize, pixels outside the source image
    equal to _OUTSIDE (-1) in every channel.  Two fused 1x1 convolutions (per-channel
    broadcasts over a 300x300 image are several times slower):
      1. z = relu6(x @ W1 + b1): channels 0-2 = (x @ m + b) / 42.5, so 42.5 z is the
         clipped colour; channel 3 = relu6(-x_R - 0.5) is 0.5 outside the image, 0 inside;
      2. out = 42.5 z[:3] - mean + 2 z[3] (mean - 42.5 z_out), z_out the (constant) value
         of z[:3] at an outside pixel, which makes outside pixels 0.
    """
    mean = np.asarray(channel_mean(channel_order, mean_rgb), np.float32)
    scale = 255. / 6.
    indicator = np.array([[-1.], [0.], [0.]], np.float32)
    w1 = tf.concat([m / scale, indicator], axis=1)                           # [3, 4]
    b1 = tf.concat([b / scale, [-0.5]], axis=0)                             # [4]
    z_out = tf.nn.relu6((b - tf.reduce_sum(m, axis=0)) / scale)             # x = -1: [3]
    w2 = tf.concat([scale * np.eye(3, dtype=np.float32),
                    2. * (mean - scale * z_out)[tf.newaxis]], axis=0)       # [4, 3]
    z = tf.nn.relu6(_conv1x1(resized, w1, b1))
    return _conv1x1(z, w2, -mean)


def _render(image, window, params, out_size, channel_order, mean_rgb=None):
    """Samples `window` of the uint8 RGB image [H, W, 3] to [out_size, out_size, 3], applies
    the photometric parameters `params` [4] (see `_photometric_params`), clips, subtracts
    the mean and orders the channels; outside the image the output is 0."""
    padded = _pad_edges(image)
    resized = _resize_window(padded, window, out_size, _OUTSIDE)
    # Contrast reference: mean luminance of the image part of the window, taken on a
    # coarse sample grid (plenty for a random contrast factor, and nearly free).
    grid = tf.reshape(_resize_window(padded, window, _MEAN_GRID, _OUTSIDE), [-1, 3])
    count = tf.reduce_sum(tf.cast(grid >= 0., tf.float32)) / 3.
    channel_sums = tf.reduce_sum(tf.nn.relu(grid), axis=0)                  # outside -> 0
    luma_mean = tf.math.divide_no_nan(tf.reduce_sum(channel_sums * _LUMA_WEIGHTS), count)
    m, b = _photometric_affine(params, luma_mean, channel_order)
    out = _colour_and_normalize(resized, m, b, channel_order, mean_rgb)
    out.set_shape([out_size, out_size, 3])
    return out


def preprocess_for_train(image, boxes, labels, out_size=IMAGE_SIZE,
                         channel_order=DEFAULT_CHANNEL_ORDER, seed=None, mean_rgb=None):
    """SSD training augmentation of one image (see the module docstring for the steps).

    Args:
      image: uint8 [H, W, 3], RGB.
      boxes: float32 [N, 4], [ymin, xmin, ymax, xmax] normalized to the image (N may be 0).
      labels: int32 [N].
      out_size: output side in pixels.
      channel_order: 'bgr' (default, VGG-16 reduced-fc) or 'rgb'.
      seed: None, a Python int, or an int tensor [2] (see the module docstring).
      mean_rgb: per-channel mean (R, G, B, 0-255) to subtract; None: MEAN_RGB.
    Returns:
      image: float32 [out_size, out_size, 3], mean-subtracted, channels in `channel_order`;
        area outside the source image (zoom-out) is 0 (= the mean; |v| < 1e-4).
      boxes: float32 [M, 4], [ymin, xmin, ymax, xmax] normalized to the output, within
        [0, 1], each with positive height and width.
      labels: int32 [M], the labels of the kept boxes.
    """
    _check_channel_order(channel_order)
    with tf.name_scope('preprocess_for_train'):
        image = _check_image(image, 'preprocess_for_train')
        boxes = tf.reshape(tf.cast(boxes, tf.float32), [-1, 4])
        labels = tf.reshape(tf.cast(labels, tf.int32), [-1])
        # Every random number of this augmentation, from one key.
        u = tf.random.stateless_uniform([NUM_CROP_TRIALS + 4, 4], _seed_key(seed))
        u_trials, u_zoom, u_choice, u_colour = tf.split(u, [NUM_CROP_TRIALS, 1, 1, 2])
        u_mode, u_flip = tf.unstack(u_choice[0, 0:2])

        window = _sample_window(boxes, tf.reshape(u_zoom, [4]), u_mode, u_trials)
        new_boxes, new_labels = _boxes_in_window(boxes, labels, window)
        new_boxes, window = _flip_left_right(new_boxes, window, u_flip < FLIP_PROB)
        out_image = _render(image, window, _photometric_params(tf.reshape(u_colour, [8])),
                            out_size, channel_order, mean_rgb)
        new_boxes.set_shape([None, 4])
        new_labels.set_shape([None])
        return out_image, new_boxes, new_labels
