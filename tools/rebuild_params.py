"""Rebuild a model directory's params.json from its checkpoint (when it is lost or damaged).

    python3 -m tools.rebuild_params --model_dir logs/ [--data_dir dataset/tfrecords]

train_ssd.py records the model's settings in <model_dir>/params.json; eval, the demo and export
read them. When that file is deleted, emptied or wrong, the newest readable checkpoint still
says which model it holds: its variable names and shapes give the backbone, the class count
(background included), the anchors per cell and the model scope
(utility/checkpoints/restore.ssd_checkpoint_identity). This tool writes a params.json with those,
the anchor spec of that backbone (checked against the checkpoint's anchors per cell) and the
defaults for everything else (training rewrites them from its flags when it resumes). With
--data_dir, the class names are those of the data (its manifest.json, or the names the records
carry) when their count fits. An existing params.json is kept as params.json.replaced-<time>.

Exit status: 0 written, 2 when there is no readable SSD checkpoint or it cannot be described.
"""
import argparse
import os
import sys
import time


def rebuild_params(model_dir, data_dir=None, log=print):
    """Writes <model_dir>/params.json from the newest readable checkpoint; returns its path.

    Raises:
      ValueError: no readable checkpoint, not a whole SSD, a backbone no registered layout
        fits, or anchors per cell that no anchor spec here gives (one line, naming the fix).
    """
    from common import defaults
    from dataset.class_names import class_names_of
    from net import anchors as anchor_lib
    from utility import ssd_model
    from utility.checkpoints import files as checkpoint_files, params_file, restore

    checkpoint = checkpoint_files.newest_readable_checkpoint(model_dir, repair=False)
    if checkpoint is None:
        raise ValueError('%s holds no checkpoint, so there is nothing to rebuild params.json '
                         'from; pass the folder train_ssd.py wrote (--model_dir).' % model_dir)
    identity = restore.ssd_checkpoint_identity(checkpoint)
    if identity is None:
        raise ValueError('Checkpoint %s has no multibox heads: it is not a whole SSD model, so '
                         'it cannot say what params.json should hold.' % checkpoint)
    if identity['backbone'] is None:
        raise ValueError('The backbone of checkpoint %s matches no layout of net/backbones.py; '
                         'register it there, then run this again.' % checkpoint)
    overrides = {'backbone': identity['backbone'], 'num_classes': identity['num_classes'],
                 'model_scope': identity['model_scope']}
    if data_dir:
        names, source = class_names_of(data_dir)
        if len(names) == identity['num_classes']:
            overrides['class_names'] = list(names)
            log('Class names from %s: %s.' % (source, ', '.join(names[1:])))
        else:
            log('warning: %s names %d classes (background included) but the checkpoint has %d; '
                'class names not recorded.' % (source, len(names), identity['num_classes']))
    params = ssd_model.make_params(**overrides)
    anchors = list(anchor_lib.anchors_per_location(params['anchor_spec']))
    if anchors != identity['anchors_per_location']:
        raise ValueError('Checkpoint %s has %s anchors per cell, but the %s anchor spec gives %s: '
                         'it was trained with a custom spec; restore params.json from a backup.'
                         % (checkpoint, identity['anchors_per_location'], identity['backbone'],
                            anchors))
    params['rebuilt_from_checkpoint'] = checkpoint
    path = os.path.join(model_dir, defaults.PARAMS_NAME)
    if os.path.exists(path):
        aside = '%s.replaced-%s' % (path, time.strftime('%Y%m%d-%H%M%S'))
        os.replace(path, aside)
        log('Kept the old %s as %s.' % (os.path.basename(path), aside))
    params_file.save_params(params, model_dir)
    log('Wrote %s from %s: %s.' % (path, checkpoint, restore.describe_identity(identity)))
    return path


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog='python3 -m tools.rebuild_params',
        description='Rebuild <model_dir>/params.json from the newest readable checkpoint in it '
                    '(backbone, class count, anchors and model scope read from its variables).')
    parser.add_argument('--model_dir', required=True,
                        help='The training directory (train_ssd.py --model_dir).')
    parser.add_argument('--data_dir', default='',
                        help='Optional: the TFRecords folder it was trained on, to record the '
                             'class names too (its manifest.json, or the names in the records).')
    args = parser.parse_args(argv)
    try:
        rebuild_params(args.model_dir, args.data_dir or None)
    except ValueError as error:
        print('error: %s' % error, file=sys.stderr)
        return 2
    return 0


if __name__ == '__main__':
    sys.exit(main())
