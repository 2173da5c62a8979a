"""Plots a training run's learning curve: train losses and held-out mAP per global step.

    python3 tools/plot_learning_curve.py --model_dir=heldout_output/model \
        --history=heldout_output/eval/metrics_history.jsonl --output=docs/heldout_curve.png

Several runs in one figure (e.g. the same recipe in fp32 and bf16): repeat --model_dir and
--history in the same order, with a --label for each:

    python3 tools/plot_learning_curve.py --output=docs/bf16_vs_fp32.png \
        --label=fp32 --model_dir=fp32/model --history=fp32/eval/metrics_history.jsonl \
        --label=bf16 --model_dir=bf16/model --history=bf16/eval/metrics_history.jsonl

Left panel: cls_loss and loc_loss from the TensorBoard summaries train_ssd.py writes in
--model_dir (every --save_summary_steps). Right panel: mAP (VOC07 11-point and VOC2010+ area)
of each checkpoint, and COCO AP@[.5:.95] where the history has it (`--metric both`), from the
metrics_history.jsonl that `eval_ssd.py --watch` appends.
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
                if value.tag in found:  # TF1 summaries: simple_value; TF2: a scalar tensor
                    found[value.tag][event.step] = (
                        float(tf.make_ndarray(value.tensor)) if value.HasField('tensor')
                        else value.simple_value)
    return {tag: sorted(values.items()) for tag, values in found.items()}


def read_history(path):
    with open(path, encoding='utf-8') as f:
        return [json.loads(line) for line in f if line.strip()]


def plot(train, history, output, title='', runs=None):
    """Writes the two-panel PNG to `output`; returns the path. `runs` (instead of `train` and
    `history`): [(label, train, history)] drawn one colour per run."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    runs = runs or [('', train, history)]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    styles = {'cls_loss': '.-', 'loc_loss': 'x:'}
    bests = []
    for index, (label, train, history) in enumerate(runs):
        colour = 'C%d' % index if len(runs) > 1 else None
        prefix = label + ' ' if label else ''
        for number, (tag, points) in enumerate(train.items()):
            if points:
                left.plot([s for s, _ in points], [v for _, v in points],
                          styles.get(tag, '.-'), label=prefix + tag,
                          color=colour or 'C%d' % number)
        steps = [r['global_step'] for r in history]
        right.plot(steps, [r['map_07'] for r in history], 'o-', color=colour or 'C0',
                   label=prefix + 'mAP VOC07 11-point')
        right.plot(steps, [r['map_area'] for r in history], 's--', color=colour or 'C1',
                   alpha=0.6 if colour else 1, label=prefix + 'mAP VOC2010+ area')
        coco = [(r['global_step'], r['coco']['AP']) for r in history if r.get('coco')]
        if coco:
            right.plot([s for s, _ in coco], [v for _, v in coco], '^-.', color=colour or 'C2',
                       alpha=0.6 if colour else 1, label=prefix + 'COCO AP@[.5:.95]')
        if history:
            best = max(history, key=lambda r: r['map_07'])
            bests.append('%sbest VOC07 mAP %.3f at step %d' % (
                prefix, best['map_07'], best['global_step']))
    left.set_xlabel('global step')
    left.set_ylabel('training loss')
    left.set_yscale('log')
    left.legend(fontsize='small')
    left.grid(alpha=0.3)
    right.set_xlabel('global step')
    right.set_ylabel('held-out mAP')
    right.set_ylim(0, 1)
    right.legend(fontsize='small')
    right.grid(alpha=0.3)
    if bests:
        right.set_title('\n'.join(bests), fontsize='small' if len(bests) > 1 else None)
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
    parser.add_argument('--model_dir', required=True, action='append',
                        help='training directory (repeat for several runs)')
    parser.add_argument('--history', required=True, action='append',
                        help='metrics_history.jsonl written by eval_ssd.py --watch (one per '
                             '--model_dir, same order)')
    parser.add_argument('--label', action='append', default=[],
                        help='name of each run in the legend (one per --model_dir)')
    parser.add_argument('--output', required=True, help='PNG to write')
    parser.add_argument('--title', default='')
    args = parser.parse_args(argv)
    if len(args.history) != len(args.model_dir) or len(args.label) not in (
            0, len(args.model_dir)):
        print('error: give one --history (and one --label, if any) per --model_dir; got %d '
              '--model_dir, %d --history, %d --label.' % (
                  len(args.model_dir), len(args.history), len(args.label)), file=sys.stderr)
        return 2
    runs = []
    labels = args.label or [''] * len(args.model_dir)
    for label, model_dir, history_path in zip(labels, args.model_dir, args.history):
        if not os.path.exists(history_path):
            print('error: %s does not exist; run eval_ssd.py --watch --model_dir=%s first.'
                  % (history_path, model_dir), file=sys.stderr)
            return 2
        history = read_history(history_path)
        runs.append((label, read_train_scalars(model_dir), history))
        for record in history:
            print('%sstep %6d  mAP VOC07 %.4f  VOC2010+ %.4f%s'
                  % (label + ': ' if label else '', record['global_step'], record['map_07'],
                     record['map_area'], '  COCO AP %.4f' % record['coco']['AP']
                     if record.get('coco') else ''))
    path = plot(None, None, args.output, args.title, runs=runs)
    print('Wrote %s' % path)
    return 0

if __name__ == '__main__':
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    sys.exit(main())
