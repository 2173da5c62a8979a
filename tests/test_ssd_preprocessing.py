"""Tests for preprocessing/ssd_preprocessing.py (training augmentation, eval resize).

One graph per test with placeholders (image, boxes, labels, seed key), run for many seed
keys in one session, so a whole file stays fast.
"""
import numpy as np
import pytest
import tensorflow as tf

from preprocessing import ssd_preprocessing as sp

OUT = 300
NUM_SEEDS = 150


class _Train:
    """preprocess_for_train on placeholders; call(image, boxes, labels, key) -> numpy triple."""

    def __init__(self, out_size=OUT, channel_order='bgr'):
        self.graph = tf.Graph()
        with self.graph.as_default():
            self.image = tf.compat.v1.placeholder(tf.uint8, [None, None, 3])
            self.boxes = tf.compat.v1.placeholder(tf.float32, [None, 4])
            self.labels = tf.compat.v1.placeholder(tf.int32, [None])
            self.key = tf.compat.v1.placeholder(tf.int32, [2])
            self.outputs = sp.preprocess_for_train(self.image, self.boxes, self.labels,
                                                   out_size=out_size,
                                                   channel_order=channel_order, seed=self.key)
        self.sess = tf.compat.v1.Session(graph=self.graph)

    def __call__(self, image, boxes, labels, key):
        return self.sess.run(self.outputs, {self.image: image, self.boxes: boxes,
                                            self.labels: labels, self.key: key})

    def close(self):
        self.sess.close()


@pytest.fixture(scope='module')
def train_bgr():
    t = _Train()
    yield t
    t.close()


def _run(fn):
    with tf.Graph().as_default():
        out = fn()
        with tf.compat.v1.Session() as sess:
            return sess.run(out)


def _tf1_resize(image, out_h, out_w):
    """NumPy TF1 bilinear resize, align_corners=False, no half-pixel centres: output (i, j)
    reads source (i * H / out_h, j * W / out_w), the upper neighbour clamped to the last
    pixel (the original SSD.TensorFlow resize). float64 [out_h, out_w, C]."""
    image = np.asarray(image, np.float64)

    def axis(out, size):
        src = np.arange(out) * size / out
        lo = np.floor(src).astype(int)
        return lo, np.minimum(lo + 1, size - 1), src - lo
    y0, y1, fy = axis(out_h, image.shape[0])
    x0, x1, fx = axis(out_w, image.shape[1])
    rows = image[y0] * (1 - fy)[:, None, None] + image[y1] * fy[:, None, None]
    return rows[:, x0] * (1 - fx)[None, :, None] + rows[:, x1] * fx[None, :, None]


def _painted_image():
    """Grey 240x320 image with a red and a blue rectangle; their boxes (pixel p covers
    [p, p + 1) / size), labels 7 (red), 12 (blue)."""
    h, w = 240, 320
    image = np.full((h, w, 3), 100, np.uint8)
    image[40:150, 30:170] = (255, 0, 0)     # rows 40..149, cols 30..169
    image[120:220, 200:300] = (0, 0, 255)   # rows 120..219, cols 200..299

    def box(r0, r1, c0, c1):  # inclusive pixel index ranges -> normalized edges
        return [r0 / h, c0 / w, (r1 + 1) / h, (c1 + 1) / w]
    boxes = np.array([box(40, 149, 30, 169), box(120, 219, 200, 299)], np.float32)
    return image, boxes, np.array([7, 12], np.int32)


def _mask_box(mask):
    """Bounding box [ymin, xmin, ymax, xmax] (normalized, same convention) of a bool mask."""
    rows = np.where(mask.any(axis=1))[0]
    cols = np.where(mask.any(axis=0))[0]
    n = mask.shape[0]
    return np.array([rows[0], cols[0], rows[-1] + 1, cols[-1] + 1]) / n


def _iou(a, b):
    ih = max(0., min(a[2], b[2]) - max(a[0], b[0]))
    iw = max(0., min(a[3], b[3]) - max(a[1], b[1]))
    inter = ih * iw
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def _is_fill(out):
    """Pixels equal to the mean (0 after mean subtraction) in every channel: [H, W] bool."""
    return np.all(np.abs(out) < 1e-3, axis=-1)


def test_painted_boxes_follow_the_image(train_bgr):
    image, boxes, labels = _painted_image()
    checked = flipped = zoomed = cropped = 0
    for i in range(NUM_SEEDS):
        out, out_boxes, out_labels = train_bgr(image, boxes, labels, [i, 1234])
        rgb = sp.denormalize_image(out, 'bgr').numpy().astype(np.int32)
        red = rgb[..., 0] - np.maximum(rgb[..., 1], rgb[..., 2]) > 25
        blue = rgb[..., 2] - np.maximum(rgb[..., 0], rgb[..., 1]) > 25
        assert set(out_labels.tolist()) <= {7, 12}
        # A crop must keep at least one box centre, so some box always survives.
        assert len(out_labels) >= 1
        for label, mask in ((7, red), (12, blue)):
            if label not in out_labels:
                continue
            box = out_boxes[list(out_labels).index(label)]
            side_px = min(box[2] - box[0], box[3] - box[1]) * OUT
            assert mask.any(), 'seed %d: box %s kept but its colour is gone' % (i, box)
            if side_px >= 30:
                iou = _iou(_mask_box(mask), box)
                assert iou > 0.9, 'seed %d label %d: colour IoU %.3f' % (i, label, iou)
                checked += 1
        fill = _is_fill(out)
        zoomed += fill.any()
        # The red box starts left of the blue one; after a flip it is on the right.
        if len(out_labels) == 2:
            red_box = out_boxes[list(out_labels).index(7)]
            blue_box = out_boxes[list(out_labels).index(12)]
            flipped += red_box[1] > blue_box[1]
        cropped += not np.allclose(out_boxes, boxes, atol=1e-4) and not fill.any()
    # Make sure the augmentation really exercised every branch in these runs.
    assert checked >= NUM_SEEDS // 2, checked
    assert flipped >= 10 and zoomed >= 20 and cropped >= 20, (flipped, zoomed, cropped)


def test_zoom_out_fill_is_the_mean_and_a_frame(train_bgr):
    image, boxes, labels = _painted_image()
    seen = 0
    for i in range(60):
        out, _, _ = train_bgr(image, boxes, labels, [i, 99])
        fill = _is_fill(out)
        if not fill.any():
            continue
        seen += 1
        # The image part is one axis-aligned rectangle: fill = whole rows / columns.
        inside = ~fill
        rows, cols = inside.any(axis=1), inside.any(axis=0)
        np.testing.assert_array_equal(inside, rows[:, None] & cols[None, :])
        # Fill pixels are the mean exactly (up to float rounding).
        assert np.abs(out[fill]).max() < 1e-4
        np.testing.assert_array_equal(sp.denormalize_image(out, 'bgr').numpy()[fill][0],
                                      np.rint(sp.MEAN_RGB).astype(np.uint8))
    assert seen >= 10


def test_render_zoom_out_window_fills_with_mean_for_any_colour_map():
    image = np.full((4, 4, 3), 200, np.uint8)
    # Window [-1, -1, 1, 1]: image in the bottom-right quarter of a 2x canvas. With 9 output
    # pixels per side, output pixel j samples v = -1 + j / 4 (image pixel v * 3): rows and
    # columns 0..3 are outside the image, 4..8 inside.
    for params in ([0., 1., 1., 0.], [30., 1.5, 0.5, 0.05], [-32., 0.5, 1.5, -0.05]):
        out = _run(lambda: sp._render(tf.constant(image), tf.constant([-1., -1., 1., 1.]),
                                      tf.constant(params), 9, 'bgr'))
        assert np.abs(out[:4]).max() < 1e-4 and np.abs(out[:, :4]).max() < 1e-4
        assert np.abs(out[4:, 4:]).min() > 1.


def test_render_identity_colours_flip_crop_and_channel_order():
    """Whole image, flip, crops and a flipped crop sample as the original: integer crop,
    flip, then the TF1 non-aligned resize (NumPy `_tf1_resize`), clamped at the borders."""
    image = (np.arange(48, dtype=np.uint8).reshape(4, 4, 3) * 5)
    img = image.astype(np.float64)
    identity = [0., 1., 1., 0.]

    def render(window, order):
        return _run(lambda: sp._render(tf.constant(image), tf.constant(window),
                                       tf.constant(identity), 5, order))
    rgb = render([0., 0., 1., 1.], 'rgb')
    np.testing.assert_allclose(rgb + np.array(sp.MEAN_RGB), _tf1_resize(img, 5, 5), atol=1e-3)
    # Hand numbers: output column 1 reads source x = 0.8 (0.2 * pixel 0 + 0.8 * pixel 1);
    # column 4 reads x = 3.2, clamped to pixel 3.
    np.testing.assert_allclose(rgb[0, 1] + np.array(sp.MEAN_RGB), 0.2 * img[0, 0] + 0.8 * img[0, 1],
                               atol=1e-3)
    np.testing.assert_allclose(rgb[0, 4] + np.array(sp.MEAN_RGB), img[0, 3], atol=1e-3)
    bgr = render([0., 0., 1., 1.], 'bgr')
    np.testing.assert_allclose(bgr, rgb[..., ::-1], atol=1e-4)
    # Crops reaching the bottom/right border: exactly the original (crop, flip, resize).
    cases = {(0., 1., 1., 0.): img[:, ::-1],              # flip: the mirrored image resized
             (.5, .5, 1., 1.): img[2:, 2:],                # bottom-right: clamps at the border
             (.5, .5, 1., 0.): img[2:, :2][:, ::-1]}       # flipped bottom-left quarter
    for window, source in cases.items():
        got = render(list(window), 'rgb') + np.array(sp.MEAN_RGB)
        np.testing.assert_allclose(got, _tf1_resize(source, 5, 5), atol=1e-3, err_msg=window)
    # Top-left quarter: the same sample positions (source 0, 0.4, 0.8, 1.2, 1.6), but past the
    # crop's last pixel the interpolation reads the image beyond it (the original clamps to
    # the crop): rows/columns 0-2 are the original's, 3-4 continue into pixel 2.
    quarter = render([0., 0., .5, .5], 'rgb') + np.array(sp.MEAN_RGB)
    np.testing.assert_allclose(quarter[:3, :3], _tf1_resize(img[:2, :2], 5, 5)[:3, :3],
                               atol=1e-3)
    np.testing.assert_allclose(quarter, _tf1_resize(img, 10, 10)[:5, :5], atol=1e-3)
    # Not an align-corners resize: that one would put pixel 3 in column 4 but (x = 0.75)
    # 0.25 * pixel 0 + 0.75 * pixel 1 in column 1.
    assert np.abs(rgb[0, 1] + np.array(sp.MEAN_RGB) - (0.25 * img[0, 0] + 0.75 * img[0, 1])
                  ).max() > 0.5


def test_flip_alone_mirrors_boxes_and_window():
    boxes = np.array([[0.1, 0.2, 0.5, 0.3], [0.0, 0.6, 1.0, 1.0]], np.float32)
    window = np.array([-0.5, 0.25, 1.0, 0.75], np.float32)
    fb, fw = _run(lambda: sp._flip_left_right(tf.constant(boxes), tf.constant(window),
                                              tf.constant(True)))
    np.testing.assert_allclose(fb, [[0.1, 0.7, 0.5, 0.8], [0.0, 0.0, 1.0, 0.4]], atol=1e-6)
    np.testing.assert_allclose(fw, [-0.5, 0.75, 1.0, 0.25])
    nb, nw = _run(lambda: sp._flip_left_right(tf.constant(boxes), tf.constant(window),
                                              tf.constant(False)))
    np.testing.assert_allclose(nb, boxes)
    np.testing.assert_allclose(nw, window)


def test_boxes_in_window_keeps_centres_clips_and_renormalizes():
    boxes = np.array([[0.1, 0.1, 0.3, 0.3],     # centre (.2, .2) inside, clipped at top-left
                      [0.4, 0.4, 0.6, 0.9],     # centre (.5, .65) inside, clipped at right
                      [0.0, 0.7, 0.2, 0.9],     # centre (.1, .8) outside: dropped
                      [0.3, 0.3, 0.5, 0.5]],    # fully inside
                     np.float32)
    labels = np.array([1, 2, 3, 4], np.int32)
    window = np.array([0.15, 0.15, 0.65, 0.75], np.float32)  # 0.5 high, 0.6 wide
    out_boxes, out_labels = _run(lambda: sp._boxes_in_window(
        tf.constant(boxes), tf.constant(labels), tf.constant(window)))
    np.testing.assert_array_equal(out_labels, [1, 2, 4])
    np.testing.assert_allclose(out_boxes, [[0.0, 0.0, 0.3, 0.25],
                                           [0.5, 0.25 / 0.6 + 1e-7, 0.9, 1.0],
                                           [0.3, 0.25, 0.7, 0.35 / 0.6]], atol=1e-5)


def test_crop_window_meets_the_iou_constraint():
    boxes = np.array([[0.2, 0.3, 0.6, 0.7], [0.7, 0.05, 0.8, 0.15]], np.float32)
    canvas = np.array([0., 0., 1., 1.], np.float32)
    with tf.Graph().as_default():
        key = tf.compat.v1.placeholder(tf.int32, [2])
        min_iou = tf.compat.v1.placeholder(tf.float32, [])
        u = tf.random.stateless_uniform([sp.NUM_CROP_TRIALS, 4], key)
        window = sp._crop_window(tf.constant(boxes), tf.constant(canvas), min_iou, u)
        with tf.compat.v1.Session() as sess:
            # High thresholds succeed less often within NUM_CROP_TRIALS (as in the paper's
            # sampler); the counts asked for are what the sampler reaches for this box.
            for threshold, min_found in ((0.1, 25), (0.5, 20), (0.7, 2)):
                got_crop = 0
                for i in range(30):
                    w = sess.run(window, {key: [i, 5], min_iou: threshold})
                    if np.allclose(w, canvas):
                        continue
                    got_crop += 1
                    # scale = sqrt(h * w) in [0.3, 1], each side <= 1 (canvas units).
                    assert 0.3 - 1e-6 <= np.sqrt((w[2] - w[0]) * (w[3] - w[1])) <= 1. + 1e-6
                    assert w[2] - w[0] <= 1. + 1e-6 and w[3] - w[1] <= 1. + 1e-6
                    aspect = (w[3] - w[1]) / (w[2] - w[0])
                    assert 0.5 - 1e-5 <= aspect <= 2. + 1e-5
                    cy, cx = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
                    ok = [(_iou(w, b) >= threshold) and w[0] < y < w[2] and w[1] < x < w[3]
                          for b, y, x in zip(boxes, cy, cx)]
                    assert any(ok), (threshold, w)
                assert got_crop >= min_found, (threshold, got_crop)
            # "Keep the whole image" (min_iou < 0) and an impossible constraint (the tiny box
            # alone cannot reach IoU 0.9 with a crop of scale >= 0.3) return the canvas.
            tiny = sp._crop_window(tf.constant(boxes[1:]), tf.constant(canvas), 0.9,
                                   tf.random.stateless_uniform([sp.NUM_CROP_TRIALS, 4], [3, 4]))
            np.testing.assert_allclose(sess.run(window, {key: [1, 2], min_iou: -1.}), canvas)
            np.testing.assert_allclose(sess.run(tiny), canvas)


def test_zoom_out_canvas_contains_the_image():
    with tf.Graph().as_default():
        key = tf.compat.v1.placeholder(tf.int32, [2])
        canvas = sp._zoom_out_canvas(tf.random.stateless_uniform([4], key))
        with tf.compat.v1.Session() as sess:
            ratios = []
            for i in range(100):
                c = sess.run(canvas, {key: [i, 0]})
                r = c[2] - c[0]
                np.testing.assert_allclose(c[3] - c[1], r, rtol=1e-6)
                assert 1. <= r <= sp.MAX_ZOOM_OUT + 1e-6
                assert c[0] <= 0. and c[1] <= 0. and c[2] >= 1. and c[3] >= 1.
                ratios.append(r)
    zoomed = np.mean(np.array(ratios) > 1. + 1e-6)
    assert 0.3 < zoomed < 0.7, zoomed


def test_photometric_affine_hand_numbers_and_commutation():
    w = np.array([0.299, 0.587, 0.114])
    red = np.array([255., 0., 0.])

    def affine(params, luma_mean=100., order='rgb'):
        """(m, b) with distorted pixel = x @ m + b."""
        return _run(lambda: sp._photometric_affine(tf.constant(params, tf.float32),
                                                   tf.constant(luma_mean), order))
    # Identity parameters.
    m, b = affine([0., 1., 1., 0.])
    np.testing.assert_allclose(m, np.eye(3), atol=1e-5)
    np.testing.assert_allclose(b, 0., atol=1e-5)
    # Brightness +10 and contrast 0.5 about luma mean 100: y = 0.5 x + 0.5 * 100 + 10.
    m, b = affine([10., 0.5, 1., 0.])
    np.testing.assert_allclose(m, 0.5 * np.eye(3), atol=1e-6)
    np.testing.assert_allclose(b, [60., 60., 60.], atol=1e-4)
    # Saturation 0 turns red into its luminance grey 0.299 * 255 = 76.245.
    m, b = affine([0., 1., 0., 0.])
    np.testing.assert_allclose(red @ m + b, [76.245] * 3, atol=1e-3)
    # Saturation 1.5: 1.5 * red - 0.5 * 76.245.
    np.testing.assert_allclose(red @ affine([0., 1., 1.5, 0.])[0],
                               [382.5 - 38.1225, -38.1225, -38.1225], atol=1e-3)
    # Hue: greys stay, luminance stays, the colour changes; 120 degrees (1/3 of the
    # circle) three times is the identity.
    m, b = affine([0., 1., 1., 0.05])
    np.testing.assert_allclose(np.array([50., 50., 50.]) @ m, [50.] * 3, atol=1e-3)
    np.testing.assert_allclose((red @ m) @ w, red @ w, atol=1e-3)
    assert not np.allclose(red @ m, red, atol=1.)
    third = affine([0., 1., 1., 1. / 3.])[0]
    np.testing.assert_allclose(third @ third @ third, np.eye(3), atol=1e-4)
    # BGR output order permutes the outputs only.
    m_bgr, b_bgr = affine([-7., 1.2, 0.8, 0.03], order='bgr')
    m_rgb, b_rgb = affine([-7., 1.2, 0.8, 0.03], order='rgb')
    np.testing.assert_allclose(m_bgr, m_rgb[:, ::-1], atol=1e-6)
    np.testing.assert_allclose(b_bgr, b_rgb[::-1], atol=1e-6)
    # Composition: the map equals the ops applied one by one, in any order.
    sat = affine([0., 1., 0.6, 0.])[0]
    hue = affine([0., 1., 1., 0.04])[0]
    m, b = affine([-20., 1.3, 0.6, 0.04], luma_mean=80.)
    x = np.array([[10., 200., 30.], [250., 250., 5.], [0., 0., 0.]])
    for order in ('bchs', 'shcb', 'hsbc', 'cbsh'):
        y, mean = x.copy(), 80.
        for op in order:
            if op == 'b':
                y, mean = y - 20., mean - 20.
            elif op == 'c':
                y = 1.3 * y + (1. - 1.3) * mean   # the luminance mean is unchanged
            elif op == 'h':
                y = y @ hue
            else:
                y = y @ sat
        np.testing.assert_allclose(x @ m + b, y, atol=1e-3, err_msg=order)


def test_eval_values_hand_computed():
    # 2x2 image to 3x3, TF1 bilinear without aligned corners: output i reads source i * 2 / 3
    # = 0, 2/3, 4/3 (clamped to 1): rows/columns are pixel 0, (p0 + 2 p1) / 3, pixel 1.
    image = np.array([[[0, 20, 40], [100, 120, 140]],
                      [[200, 220, 240], [50, 70, 90]]], np.uint8)
    img = image.astype(np.float64)
    weights = np.array([[1., 0.], [1. / 3., 2. / 3.], [0., 1.]])
    expected = np.einsum('iy,yxc,jx->ijc', weights, img, weights)
    np.testing.assert_allclose(expected, _tf1_resize(img, 3, 3))
    # Centre: (p00 + 2 p01 + 2 p10 + 4 p11) / 9, red channel (0 + 200 + 400 + 200) / 9.
    assert expected[1, 1, 0] == pytest.approx(800. / 9.)
    rgb = _run(lambda: sp.preprocess_for_eval(tf.constant(image), out_size=3,
                                              channel_order='rgb'))
    bgr = _run(lambda: sp.preprocess_for_eval(tf.constant(image), out_size=3))
    assert rgb.dtype == np.float32 and rgb.shape == (3, 3, 3)
    np.testing.assert_allclose(rgb, expected - np.array(sp.MEAN_RGB), atol=1e-3)
    np.testing.assert_allclose(bgr, (expected - np.array(sp.MEAN_RGB))[..., ::-1], atol=1e-3)
    # Pixel (0, 0) in BGR: (40 - 103.94, 20 - 116.78, 0 - 123.68).
    np.testing.assert_allclose(bgr[0, 0], [-63.94, -96.78, -123.68], atol=1e-3)
    np.testing.assert_array_equal(sp.denormalize_image(bgr, 'bgr').numpy()[0, 0], [0, 20, 40])
    # Downscaling a non-square image by non-integer factors (37x23 -> 11x11) as well.
    image = np.random.RandomState(3).randint(0, 256, (37, 23, 3)).astype(np.uint8)
    rgb = _run(lambda: sp.preprocess_for_eval(tf.constant(image), out_size=11,
                                              channel_order='rgb'))
    np.testing.assert_allclose(rgb + np.array(sp.MEAN_RGB), _tf1_resize(image, 11, 11),
                               atol=1e-3)


def test_channel_order_bgr_is_rgb_reversed(train_bgr):
    train_rgb = _Train(channel_order='rgb')
    image, boxes, labels = _painted_image()
    try:
        for i in range(5):
            out_b, boxes_b, labels_b = train_bgr(image, boxes, labels, [i, 7])
            out_r, boxes_r, labels_r = train_rgb(image, boxes, labels, [i, 7])
            np.testing.assert_allclose(out_b, out_r[..., ::-1], atol=1e-3)
            np.testing.assert_allclose(boxes_b, boxes_r)
            np.testing.assert_array_equal(labels_b, labels_r)
    finally:
        train_rgb.close()
    assert sp.channel_mean('bgr') == (103.94, 116.78, 123.68)
    assert sp.channel_mean('rgb') == sp.MEAN_RGB


def test_zero_box_image(train_bgr):
    image = np.random.RandomState(0).randint(0, 256, (50, 70, 3)).astype(np.uint8)
    zoomed = 0
    for i in range(40):
        out, out_boxes, out_labels = train_bgr(image, np.zeros((0, 4), np.float32),
                                               np.zeros((0,), np.int32), [i, 3])
        assert out.shape == (OUT, OUT, 3) and np.all(np.isfinite(out))
        assert out_boxes.shape == (0, 4) and out_labels.shape == (0,)
        fill = _is_fill(out)
        zoomed += fill.any()
        assert not fill.all()  # a crop is centred on the image, so some image is visible
    assert zoomed >= 5


def test_shapes_dtypes_and_box_ranges(train_bgr):
    rng = np.random.RandomState(1)
    image = rng.randint(0, 256, (120, 90, 3)).astype(np.uint8)
    boxes = np.array([[0., 0., 1., 1.], [0.0, 0.0, 0.05, 0.05], [0.9, 0.8, 1.0, 1.0],
                      [0.3, 0.2, 0.7, 0.5], [0.45, 0.45, 0.55, 0.55]], np.float32)
    labels = np.arange(1, 6, dtype=np.int32)
    with train_bgr.graph.as_default():
        assert train_bgr.outputs[0].shape.as_list() == [OUT, OUT, 3]
        assert train_bgr.outputs[0].dtype == tf.float32
        assert train_bgr.outputs[1].shape.as_list() == [None, 4]
        assert train_bgr.outputs[2].dtype == tf.int32
    for i in range(60):
        out, out_boxes, out_labels = train_bgr(image, boxes, labels, [i, 11])
        assert out.dtype == np.float32 and out.shape == (OUT, OUT, 3)
        assert out_boxes.dtype == np.float32 and out_labels.dtype == np.int32
        assert len(out_boxes) == len(out_labels) >= 1
        assert np.all(out_boxes >= 0.) and np.all(out_boxes <= 1.)
        assert np.all(out_boxes[:, 2:] > out_boxes[:, :2])
        assert set(out_labels.tolist()) <= set(labels.tolist())
        assert len(set(out_labels.tolist())) == len(out_labels)
        # mean-subtracted range
        assert out.min() >= -123.68 - 1e-3 and out.max() <= 255. - 103.94 + 1e-3
    # Another out_size.
    small = _Train(out_size=64)
    try:
        out, _, _ = small(image, boxes, labels, [0, 0])
        assert out.shape == (64, 64, 3)
    finally:
        small.close()


def test_seeds_reproduce_and_vary(train_bgr):
    image, boxes, labels = _painted_image()
    a = train_bgr(image, boxes, labels, [5, 6])
    b = train_bgr(image, boxes, labels, [5, 6])
    c = train_bgr(image, boxes, labels, [6, 6])
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])

    def first_two(seed):
        ds = tf.data.Dataset.from_tensors((image, boxes, labels)).repeat(2).map(
            lambda i, bx, lb: sp.preprocess_for_train(i, bx, lb, out_size=32, seed=seed))
        return [x[0].numpy() for x in ds]
    # Python int seed: elements differ from each other, and a rerun repeats the sequence.
    run1, run2 = first_two(42), first_two(42)
    assert not np.array_equal(run1[0], run1[1])
    np.testing.assert_array_equal(run1[0], run2[0])
    np.testing.assert_array_equal(run1[1], run2[1])
    # No seed: still works and varies.
    free = first_two(None)
    assert not np.array_equal(free[0], free[1])


def test_bad_arguments_name_the_fix():
    image = np.zeros((10, 10, 3), np.uint8)
    with tf.Graph().as_default():
        with pytest.raises(ValueError, match='channel_order'):
            sp.preprocess_for_eval(image, channel_order='BGR')
        with pytest.raises(ValueError, match='uint8'):
            sp.preprocess_for_eval(image.astype(np.float32))
        with pytest.raises(ValueError, match='single images'):
            sp.preprocess_for_train(image[None], np.zeros((0, 4), np.float32),
                                    np.zeros((0,), np.int32))
        with pytest.raises(ValueError, match='3 RGB channels'):
            sp.preprocess_for_eval(np.zeros((10, 10, 1), np.uint8))
        with pytest.raises(ValueError, match='shape \\[2\\]'):
            sp.preprocess_for_train(image, np.zeros((0, 4), np.float32),
                                    np.zeros((0,), np.int32), seed=tf.constant([1, 2, 3]))
