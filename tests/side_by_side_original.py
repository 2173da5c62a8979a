"""Side by side with the original SSD.TensorFlow code: same weights, same photos, same detections?

    /work/main/.venv/bin/python tests/side_by_side_original.py \
        [--reference /work/shared/reference/deepsparkhub_ssd_tf] [--top 50]

A measurement script (not collected by pytest; about a minute on 2 cores):

1. copies the original code to a temporary folder and runs it there in its own Python process
   (its folder as the working directory, never on this project's sys.path): it builds its
   SSD300 (SSDBackbone + multibox_head under 'ssd300', channels_last) under TF 2.15 with seeded
   random weights, saves them (its own Saver: the TF 2.x names, ssd300/conv1_1/kernel, ...),
   and runs its eval path on the photos: its preprocess_for_eval (BGR), its anchors and
   decoder (AnchorCreator / AnchorEncoder with eval_ssd.py's settings) and its eval_ssd.py
   parse_by_class (per-class select, clip, min size, top 400, NMS 200);
2. runs this project's eval path on the same photos with that checkpoint as --checkpoint_path
   would: checkpoint_params.find_checkpoint (which converts it), make_image_files_input_fn and the
   Estimator's predict with the one model_fn, keep_per='class' (and 'image');
3. prints, per photo, how many of the original's top-N detections (by score) the project
   reproduces (same class, |score diff| <= 1e-4, box diff <= 1e-4), and the largest
   score/box differences over matched detections.

To run the original under TF 2.15 its eval_ssd.py is imported with `tensorflow` bound to
`tensorflow.compat.v1` (it uses tf.app.flags), whose name_scope is made to accept the values
list where eval_ssd.py passes it (TF 2.15 rejects it as default_name); nothing else changes.
"""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The original code: in the shared/ folder beside the checkout (as CI lays it), else /work's.
DEFAULT_REFERENCE = next(
    (path for path in (os.path.join(os.path.dirname(REPO), 'shared', 'reference',
                                    'deepsparkhub_ssd_tf'),
                       '/work/shared/reference/deepsparkhub_ssd_tf') if os.path.isdir(path)),
    '/work/shared/reference/deepsparkhub_ssd_tf')

ORIGINAL_DRIVER = textwrap.dedent('''
    import sys
    import numpy as np
    import tensorflow
    import tensorflow.compat.v1 as tf
    tf.disable_eager_execution()
    sys.modules['tensorflow'] = tf          # eval_ssd.py: `import tensorflow as tf` (TF1 API)
    _name_scope = tf.name_scope

    def _tolerant_name_scope(name, default_name=None, values=None):
        # eval_ssd.py passes the values list where TF 2.15's v1 name_scope wants default_name.
        if isinstance(default_name, (list, tuple)):
            default_name, values = None, default_name
        return _name_scope(name, default_name, values)
    tf.name_scope = _tolerant_name_scope
    sys.argv = sys.argv[:1]
    from net import ssd_net
    from preprocessing import ssd_preprocessing
    from utility import anchor_manipulator  # the original code keeps it in utility/
    import eval_ssd

    out_dir, seed = sys.argv_saved[1], int(sys.argv_saved[2])
    images = sys.argv_saved[3:]
    creator = anchor_manipulator.AnchorCreator(
        [300, 300], layers_shapes=[(38, 38), (19, 19), (10, 10), (5, 5), (3, 3), (1, 1)],
        anchor_scales=[(0.1,), (0.2,), (0.375,), (0.55,), (0.725,), (0.9,)],
        extra_anchor_scales=[(0.1414,), (0.2739,), (0.4541,), (0.6315,), (0.8078,), (0.9836,)],
        anchor_ratios=[(1., 2., .5), (1., 2., 3., .5, 0.3333), (1., 2., 3., .5, 0.3333),
                       (1., 2., 3., .5, 0.3333), (1., 2., .5), (1., 2., .5)],
        layer_steps=[8, 16, 32, 64, 100, 300])
    all_anchors, depth, spatial = creator.get_all_anchors()
    encoder = anchor_manipulator.AnchorEncoder(allowed_borders=[1.0] * 6, positive_threshold=0.5,
                                               ignore_threshold=0.5,
                                               prior_scaling=[0.1, 0.1, 0.2, 0.2])
    path = tf.placeholder(tf.string, [])
    image = tf.image.decode_jpeg(tf.read_file(path), channels=3)
    features = ssd_preprocessing.preprocess_for_eval(image, [300, 300],
                                                     data_format='channels_last',
                                                     output_rgb=False)[tf.newaxis]
    with tf.variable_scope('ssd300', values=[features], reuse=tf.AUTO_REUSE):
        backbone = ssd_net.SSDBackbone('vgg16', training=False, data_format='channels_last')
        feature_layers = backbone.forward(features)
        loc, cls = ssd_net.multibox_head(feature_layers, 21, depth,
                                         data_format='channels_last')
        cls = tf.concat([tf.reshape(p, [1, -1, 21]) for p in cls], axis=1)
        loc = tf.concat([tf.reshape(p, [1, -1, 4]) for p in loc], axis=1)
        cls = tf.reshape(cls, [-1, 21])
        loc = tf.reshape(loc, [-1, 4])
    boxes = tf.concat(encoder.ext_decode_all_anchors(loc, all_anchors, depth, spatial), axis=0)
    selected_boxes, selected_scores = eval_ssd.parse_by_class(cls, boxes, 21, 0.01, 0.03, 400,
                                                              200, 0.45)
    variables = tf.global_variables()
    rng = np.random.RandomState(seed)
    feeds, assigns = {}, []
    for v in sorted(variables, key=lambda v: v.name):
        shape = v.shape.as_list()
        if v.name.startswith('ssd300/conv4_3_scale'):
            value = np.full(shape, 20., np.float32)
        elif len(shape) == 4:
            fan_in = shape[0] * shape[1] * shape[2]
            gain = 1.5 if '/multibox_head/' in v.name else 2.
            if 'conv1_1/' in v.name:
                gain /= 100. ** 2
            value = rng.standard_normal(shape) * np.sqrt(gain / fan_in)
        else:
            value = rng.standard_normal(shape) * 0.1
        placeholder = tf.placeholder(tf.float32, shape)
        assigns.append(tf.assign(v, placeholder))
        feeds[placeholder] = value.astype(np.float32)
    saver = tf.train.Saver(variables)
    with tf.Session() as session:
        session.run(assigns, feeds)
        saver.save(session, out_dir + '/original/model.ckpt', write_meta_graph=False)
        results = {}
        for index, image_path in enumerate(images):
            scores, bboxes = session.run([selected_scores, selected_boxes], {path: image_path})
            for c in range(1, 21):
                results['%d_scores_%d' % (index, c)] = scores[c]
                results['%d_boxes_%d' % (index, c)] = bboxes[c]
    np.savez(out_dir + '/original_detections.npz', **results)
    print('original: %d variables, e.g. %s' % (len(variables), variables[0].name))
''')


def run_original(reference, out_dir, images, seed):
    """Runs the original in a temporary copy of its folder (its own process and cwd)."""
    copy = os.path.join(out_dir, 'original_code')
    shutil.copytree(reference, copy, ignore=shutil.ignore_patterns('*.jpg', '__pycache__'))
    driver = os.path.join(copy, 'side_by_side_driver.py')
    with open(driver, 'w') as f:
        f.write('import sys\nsys.argv_saved = list(sys.argv)\n' + ORIGINAL_DRIVER)
    env = dict(os.environ, PYTHONPATH=copy, PYTHONDONTWRITEBYTECODE='1', TF_CPP_MIN_LOG_LEVEL='2')
    subprocess.run([sys.executable, driver, out_dir, str(seed)] + images, cwd=copy, env=env,
                   check=True)
    data = np.load(os.path.join(out_dir, 'original_detections.npz'))
    detections = []
    for index in range(len(images)):
        rows = []
        for c in range(1, 21):
            scores = data['%d_scores_%d' % (index, c)]
            boxes = data['%d_boxes_%d' % (index, c)]
            for score, box in zip(scores, boxes):
                if score > 0:  # the original pads with zero-score entries
                    rows.append((c, float(score), box))
        rows.sort(key=lambda r: -r[1])
        detections.append(rows)
    return os.path.join(out_dir, 'original'), detections


def run_project(checkpoint_dir, images, keep_per):
    """This project's eval path: find_checkpoint (converts), the one model_fn, predict."""
    sys.path.insert(0, REPO)
    from utility import ssd_model  # pylint: disable=import-outside-toplevel
    from utility import drivers  # pylint: disable=import-outside-toplevel
    from utility.inference import checkpoint_params, image_files
    prefix = checkpoint_params.find_checkpoint(checkpoint_dir, None)
    params = ssd_model.make_params(data_format='channels_last', keep_per=keep_per,
                                   batch_size=1)
    predictions = drivers.predict(drivers.resolve_driver('auto'), ssd_model.model_fn,
                                  image_files.make_image_files_input_fn(params, images), params,
                                  prefix)
    detections = []
    for prediction in predictions:
        count = int(prediction['num_detections'])
        detections.append([(int(c), float(s), b) for c, s, b in zip(
            prediction['classes'][:count], prediction['scores'][:count],
            prediction['boxes'][:count])])
    return prefix, detections


def compare(original, project, top):
    """(agreeing among the original's top `top`, max score diff, max box diff) for one photo."""
    agree, score_diff, box_diff = 0, 0., 0.
    used = set()
    for c, score, box in original[:top]:
        best = None
        for j, (pc, ps, pb) in enumerate(project):
            if pc == c and j not in used and abs(ps - score) <= 1e-4 and \
                    np.abs(pb - box).max() <= 1e-4:
                best = j
                break
        if best is not None:
            used.add(best)
            agree += 1
            score_diff = max(score_diff, abs(project[best][1] - score))
            box_diff = max(box_diff, float(np.abs(project[best][2] - box).max()))
    return agree, score_diff, box_diff


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--reference', default=DEFAULT_REFERENCE)
    parser.add_argument('--top', type=int, default=50, help='top-N detections per photo')
    parser.add_argument('--seed', type=int, default=0)
    args = parser.parse_args()
    work = tempfile.mkdtemp(prefix='side_by_side_')
    try:
        images = []
        for name in ('demo1.jpg', 'demo2.jpg', 'demo3.jpg'):
            images.append(os.path.join(work, name))
            shutil.copy(os.path.join(args.reference, 'demo', name), images[-1])
        checkpoint, original = run_original(args.reference, work, images, args.seed)
        os.environ['TMPDIR'] = work  # the conversion cache goes to the temporary folder
        tempfile.tempdir = None
        for keep_per in ('class', 'image'):
            prefix, project = run_project(os.path.dirname(checkpoint + '/x'), images, keep_per)
            print('keep_per=%s (project checkpoint %s):' % (keep_per, prefix))
            for name, o, p in zip(images, original, project):
                agree, sd, bd = compare(o, p, args.top)
                n = min(args.top, len(o))
                everything = compare(o, p, len(o))[0]
                print('  %s: top %d agree %d/%d (all: %d/%d original, %d project), max score '
                      'diff %.2e, max box diff %.2e' % (os.path.basename(name), args.top, agree,
                                                        n, everything, len(o), len(p), sd, bd))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == '__main__':
    main()
