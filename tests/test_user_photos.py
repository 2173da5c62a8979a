"""User photos (issue 24, item 6): EXIF orientation applied where images are decoded for the
user (the demo's decoder and input_fn), captions with non-ASCII class names drawn with a font
that has them (or one warning naming the characters)."""
import numpy as np
import pytest

from evaluation import draw
from utility.inference import image_files


def _photo():
    """A 40 x 64 RGB image no rotation or flip maps onto itself (smooth, JPEG-friendly)."""
    y, x = np.mgrid[0:40, 0:64]
    return np.stack([x * 4, y * 6, 255 - x * 2 - y], -1).clip(0, 255).astype(np.uint8)


def _save_jpeg(path, array, orientation=None):
    from PIL import Image
    image = Image.fromarray(array)
    if orientation is None:
        image.save(path, 'JPEG', quality=100)
    else:
        exif = Image.Exif()
        exif[0x0112] = orientation
        image.save(path, 'JPEG', quality=100, exif=exif.tobytes())
    return str(path)


@pytest.mark.parametrize('orientation', range(1, 9))
def test_decoder_turns_an_exif_rotated_jpeg_upright_as_pil_does(tmp_path, orientation):
    from PIL import Image, ImageOps
    path = _save_jpeg(tmp_path / 'phone.jpg', _photo(), orientation)
    assert image_files.exif_orientation(path) == orientation
    with Image.open(path) as image:
        expected = np.asarray(ImageOps.exif_transpose(image).convert('RGB'), np.int16)
    with image_files.ImageDecoder() as decoder:
        upright = decoder.decode(path)
    assert upright.shape == expected.shape  # 6 and 8 (and 5, 7) swap height and width
    # Two JPEG decoders (TensorFlow's, PIL's) differ by a few levels; a wrong turn by ~100.
    assert np.abs(upright.astype(np.int16) - expected).mean() < 2.0


def test_demo_input_fn_feeds_the_upright_photo(tmp_path):
    """The network sees (and the boxes refer to) the upright image: a photo stored sideways
    with orientation 6 gives the same input and shape as the upright photo without EXIF."""
    import tensorflow as tf
    from utility import ssd_model
    upright = np.ascontiguousarray(np.rot90(_photo(), k=-1))  # 64 x 40, as a viewer shows it
    sideways = _save_jpeg(tmp_path / 'sideways.jpg', _photo(), orientation=6)
    plain = _save_jpeg(tmp_path / 'plain.jpg', upright)
    params = ssd_model.make_params(backbone='resnet18')
    input_fn = image_files.make_image_files_input_fn(params, [sideways, plain], batch_size=2)
    with tf.Graph().as_default():
        features = tf.compat.v1.data.make_one_shot_iterator(input_fn()).get_next()
        with tf.compat.v1.Session() as sess:
            got = sess.run(features)
    np.testing.assert_array_equal(got['shape'], [[64, 40, 3], [64, 40, 3]])
    # Same picture up to JPEG noise; the stored (sideways) pixels would differ everywhere.
    assert np.abs(got['image'][0] - got['image'][1]).mean() < 3.0


def _caption_pixels(name):
    image = np.zeros((60, 160, 3), np.uint8)
    out = draw.draw_detections(image, [[11, 41, 150, 58]], [1], [0.5], ['none', name],
                               thickness=1)
    return out[:40]  # the caption above the box


def test_non_ascii_class_names_are_drawn_not_question_marks():
    cafe = _caption_pixels('café')
    assert cafe.any()
    # OpenCV's Hershey font drew 'café' as 'caf??'; the accent must show, and differ from 'cafe'.
    assert not np.array_equal(cafe, _caption_pixels('caf??'))
    assert not np.array_equal(cafe, _caption_pixels('cafe'))
    assert draw.find_font('café 0.50') is not None


def test_a_script_no_font_has_is_warned_once():
    warnings = []
    font_for_cjk = draw.find_font('人物')
    for _ in range(2):
        image = np.zeros((60, 160, 3), np.uint8)
        out = draw.draw_detections(image, [[11, 41, 150, 58]], [1], [0.5], ['none', '人物'],
                                   warn=warnings.append)
        assert out[:40].any()
    if font_for_cjk is None:
        assert len(warnings) == 1, warnings
        assert '人物' in warnings[0] and 'Install a font' in warnings[0]
    else:  # a CJK font is installed: drawn with it, nothing to warn about
        assert warnings == []
        assert draw.caption_font('人物 0.50', 13)[1] == font_for_cjk
