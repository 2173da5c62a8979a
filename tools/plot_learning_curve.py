"""Plots a training run's learning curve: train losses and held-out mAP per global step.

    python3 tools/plot_learning_curve.py --model_dir=heldout_output/model \
        --history=heldout_output/eval/metrics_history.jsonl --output=docs/heldout_curve.png

Left panel: cls_loss and loc_loss from the TensorBoard summaries train_ssd.py writes in
--model_dir (every --save_summary_steps). Right panel: mAP (VOC07 11-point and VOC2010+ area)
of each checkpoint, from the metrics_history.jsonl that `eval_ssd.py --watch` appends.
Needs matplotlib.
"""
import argparse
import glob
import json
import os
import sys


def read_train_scalars(model_dir, tags=('cls_loss', 'loc_loss')):
    """{tag: [(step, value)]} from the events files directly in `model_dir` (not eval/)."""
    import tensorflow as tf
    found = {tag: {} for tag in tags}
    for path in sorted(glob.glob(os.path.join(model_dir, 'events.out.tfevents.*'))):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                if value.tag in found:
                    found[value.tag][event.step] = value.simple_value
    return {tag: sorted(values.items()) for tag, values in found.items()}


def read_history(path):
    with open(path, encoding='utf-8') as f:
        return [json.loads(line) for line in f if line.strip()]


def plot(train, history, output, title=''):
    """Writes the two-panel PNG to `output`; returns the path."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for tag, points in train.items():
        if points:
            left.plot([s for s, _ in points], [v for _, v in points], '.-', label=tag)
    left.set_xlabel('global step')
    left.set_ylabel('training loss')
    left.set_yscale('log')
    left.legend()
    left.grid(alpha=0.3)
    steps = [r['global_step'] for r in history]
    right.plot(steps, [r['map_07'] for r in history], 'o-', label='mAP VOC07 11-point')
    right.plot(steps, [r['map_area'] for r in history], 's--', label='mAP VOC2010+ area')
    right.set_xlabel('global step')
    right.set_ylabel('held-out mAP')
    right.set_ylim(0, 1)
    right.legend()
    right.grid(alpha=0.3)
    if history:
        best = max(history, key=lambda r: r['map_07'])
        right.set_title('best VOC07 mAP %.3f at step %d' % (best['map_07'], best['global_step']))
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    folder = os.path.dirname(output)
    if folder:
        os.makedirs(folder, exist_ok=True)
    fig.savefig(output, dpi=80)
    plt.close(fig)
    return output


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--model_dir', required=True, help='training directory')
    parser.add_argument('--history', required=True,
                        help='metrics_history.jsonl written by eval_ssd.py --watch')
    parser.add_argument('--output', required=True, help='PNG to write')
    parser.add_argument('--title', default='')
    args = parser.parse_args(argv)
    if not os.path.exists(args.history):
        print('error: %s does not exist; run eval_ssd.py --watch --model_dir=%s first.'
              % (args.history, args.model_dir), file=sys.stderr)
        return 2
    history = read_history(args.history)
    path = plot(read_train_scalars(args.model_dir), history, args.output, args.title)
    for record in history:
        print('step %6d  mAP VOC07 %.4f  VOC2010+ %.4f'
              % (record['global_step'], record['map_07'], record['map_area']))
    print('Wrote %s' % path)
    return 0


if __name__ == '__main__':
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    sys.exit(main())
