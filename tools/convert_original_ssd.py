"""Convert a full SSD300 checkpoint of the original SSD.TensorFlow code to this project's names.

    python3 -m tools.convert_original_ssd --input path/to/original/model.ckpt-120000 \
        --output model/ssd300_voc/model.ckpt-120000

The input may be a directory (its latest checkpoint), a prefix or one of its files, in the
original's TF1 layout (`ssd300/conv1/conv1_1/kernel`, `ssd300/additional_layers/conv8/...`) or
the names the same code gets under TF 2.x (`ssd300/conv1_1/kernel`, `ssd300/conv8_1/kernel`).
The output is a V2 checkpoint in this project's names (`ssd300/conv1/conv1_1/weights`, ...)
with a `checkpoint` state file beside it, ready for `eval_ssd.py`, `simple_ssd_demo.py`,
`export_ssd.py` and `train_ssd.py` as `--checkpoint_path`. Those scripts also accept the
original checkpoint directly (they convert it into a temporary cache on the fly); converting
once with this command avoids repeating that and gives a checkpoint to keep.

Exit status: 0 on success, 2 when the input is missing or not an original SSD checkpoint.
"""
import argparse
import sys

from common import defaults
from utility.checkpoints import original_layout


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog='python3 -m tools.convert_original_ssd',
        description='Rename a full SSD300 checkpoint of the original SSD.TensorFlow code '
                    '(TF1 or TF 2.x variable names) to this project\'s names (model/README.md).')
    parser.add_argument('--input', required=True,
                        help='Original checkpoint: directory, prefix or one of its files.')
    parser.add_argument('--output', required=True,
                        help='Prefix of the checkpoint to write, e.g. model/ssd300_voc/model.ckpt.')
    parser.add_argument('--model_scope', default=defaults.MODEL_SCOPE,
                        help='Model scope of the written names (default %(default)s; '
                             'train/eval --model_scope).')
    args = parser.parse_args(argv)
    try:
        prefix, report = original_layout.convert_original_checkpoint(
            args.input, args.output, model_scope=args.model_scope)
    except ValueError as error:
        print('error: %s' % error, file=sys.stderr)
        return 2
    print('Converted %d variables (%s layout, scope %r, global step %d) to %s.'
          % (report['converted'], report['layout'], report['scope'], report['global_step'],
             prefix))
    if report['skipped']:
        print('Left out %d non-network variables (optimizer slots and the like), e.g. %s.'
              % (len(report['skipped']), ', '.join(report['skipped'][:3])))
    return 0


if __name__ == '__main__':
    sys.exit(main())
