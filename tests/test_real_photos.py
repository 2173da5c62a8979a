"""Real photos: the 24 vendored microscope photos (tests/data/bccd) convert with the full-set
converter's lists, and a short fit from scratch on two of them learns (the loss falls, the
trained objects are found again)."""
import json
import os
import shutil

import pytest

from conftest import REPO_ROOT, TRAIN_FAST_FLAGS, logged_losses, run_script

VENDORED = os.path.join(REPO_ROOT, 'tests', 'data', 'bccd')
SPLIT = 'BCCD'
LABELS_FILE = os.path.join(VENDORED, 'labels.txt')


def _ids(list_name):
    with open(os.path.join(VENDORED, SPLIT, 'ImageSets', 'Main', list_name + '.txt')) as f:
        return f.read().split()


def _convert(dataset_directory, output_directory, split=SPLIT):
    from dataset import voc_to_tfrecords
    return voc_to_tfrecords.convert_dataset(
        dataset_directory, output_directory, [split], [split], train_shards=1,
        validation_shards=1, num_threads=1, train_list='trainval', validation_list='test',
        label_file=LABELS_FILE)


def test_vendored_photos_convert_with_their_licence(tmp_path):
    train, held_out = _ids('trainval'), _ids('test')
    assert (len(train), len(held_out)) == (18, 6) and not set(train) & set(held_out)
    with open(os.path.join(VENDORED, 'LICENSE')) as f:
        assert f.read().startswith('MIT License')
    manifest = _convert(VENDORED, str(tmp_path / 'records'))
    with open(LABELS_FILE) as f:
        assert manifest['labels'] == ['none'] + f.read().split()
    for split, count in (('train', 18), ('val', 6)):
        recorded = manifest['splits'][split]
        assert recorded['images'] == count and not recorded['skipped_images']
        # Every class has boxes on both sides: the held-out score covers every class.
        assert all(recorded['objects_per_class'][name] > 0 for name in manifest['labels'][1:])
    # Default-box coverage of the real boxes (net/anchor_coverage, what training prints at
    # start): the small class (about 21 px at 300x300) is mostly out of reach of the VOC
    # preset's smallest box (30 px) and covered by the COCO preset's (21 px), which the recipes
    # use; the large classes are covered by both.
    import glob
    from dataset.report import read_boxes
    from net import anchor_coverage, anchors
    _, boxes, labels, _ = read_boxes(sorted(glob.glob(str(tmp_path / 'records' / 'train-*'))))
    small = manifest['labels'].index('Platelets')
    per_class = {}
    for preset in ('voc', 'coco'):
        summary = anchor_coverage.box_coverage(
            boxes, labels, anchors.ssd300_anchor_spec(preset=preset), num_classes=4)
        per_class[preset] = {k: v['coverage'] for k, v in summary['per_class'].items()}
    assert per_class['voc'][small] < 0.7 and per_class['coco'][small] >= 0.9, per_class
    for preset in ('voc', 'coco'):
        assert all(per_class[preset][k] >= 0.95 for k in (1, 2) if k != small), per_class


RECIPES = os.path.join(REPO_ROOT, 'recipes')


@pytest.mark.slow
@pytest.mark.parametrize('recipe', ['from_scratch.flags', 'demo.flags'])
def test_recipe_files_are_train_flags_that_name_no_data_set(recipe):
    path = os.path.join(RECIPES, recipe)
    with open(path) as f:
        lines = [line.rstrip('\n') for line in f]
    settings = [line for line in lines if line.strip() and not line.startswith('#')]
    # absl reads '#' as a comment only in the first column, and a value runs to the line's end.
    assert all(line.startswith('--') and '#' not in line for line in settings), settings
    text = '\n'.join(lines).lower()
    with open(LABELS_FILE) as f:
        names = f.read().split()
    assert not [word for word in ['bccd'] + names if word.lower() in text]
    # train_ssd.py's own parser reads the file (an unknown flag fails), later flags win.
    code = ('import json, sys\nfrom absl import flags\nimport train_ssd\n'
            'flags.FLAGS(["train_ssd.py", "--flagfile=%s", "--max_number_of_steps=7"])\n'
            'json.dump({k: flags.FLAGS[k].value for k in ("checkpoint_path", '
            '"max_number_of_steps")}, sys.stdout)' % path)
    proc = run_script(['-c', code], timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    values = json.loads(proc.stdout.strip().splitlines()[-1])
    assert values == {'checkpoint_path': '', 'max_number_of_steps': 7}  # from scratch


# Two photos fitted from scratch without augmentation (ResNet-18, batch 2, fp32): 5 steps of
# warm-up at 1e-4, then 1e-3; batch-norm decay 0.9 so that the moving statistics eval uses are
# the trained ones after 40 steps (0.9**40 = 1.5%).
FIT_IMAGES = ('BloodImage_00003', 'BloodImage_00004')
FIT_FLAGS = TRAIN_FAST_FLAGS + [
    '--noaugment', '--anchor_preset=coco', '--max_number_of_steps=40', '--learning_rate=1e-3',
    '--decay_boundaries=5', '--lr_decay_factors=0.1,1', '--batch_norm_decay=0.9',
    '--tf_random_seed=1', '--log_every_n_steps=5']


@pytest.mark.slow
def test_short_fit_on_real_photos_finds_the_trained_objects(tmp_path):
    data = tmp_path / 'data' / 'FIT'
    for folder, suffix in (('JPEGImages', '.jpg'), ('Annotations', '.xml')):
        os.makedirs(data / folder)
        for name in FIT_IMAGES:
            shutil.copy(os.path.join(VENDORED, SPLIT, folder, name + suffix), data / folder)
    os.makedirs(data / 'ImageSets' / 'Main')
    for list_name in ('trainval', 'test'):  # the two fitted photos are also the ones scored
        (data / 'ImageSets' / 'Main' / (list_name + '.txt')).write_text('\n'.join(FIT_IMAGES))
    records = str(tmp_path / 'records')
    _convert(str(tmp_path / 'data'), records, split='FIT')
    model_dir = str(tmp_path / 'model')
    proc = run_script(['train_ssd.py', '--data_dir=' + records, '--model_dir=' + model_dir]
                      + FIT_FLAGS)
    assert proc.returncode == 0, proc.stderr[-3000:]
    losses = logged_losses(proc.stdout + proc.stderr)
    assert losses[40] < 0.5 * losses[1], losses
    proc = run_script(['eval_ssd.py', '--data_dir=' + records, '--model_dir=' + model_dir,
                       '--metric=both', '--batch_size=2', '--num_readers=1'])
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(os.path.join(model_dir, 'eval', 'metrics.json')) as f:
        metrics = json.load(f)
    print('fit on 2 photos: VOC07 AP %s, COCO AP %.3f' % (
        {c['name']: round(c['ap_07'], 3) for c in metrics['classes']}, metrics['coco']['AP']))
    # Measured (TF 2.15, fp32): RBC and WBC AP 1.0, Platelets 0.25 (small, two boxes; not
    # asserted); a model that learnt nothing scores about 0.
    found = {c['name']: c['ap_07'] for c in metrics['classes']}
    assert found['RBC'] >= 0.9 and found['WBC'] >= 0.9, found
