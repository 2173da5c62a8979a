"""What a converted data set holds, and whether SSD's default boxes can match its boxes.

    python3 -m dataset.report --data_dir my_records [--split val] [--plot report.png]
        [--fit_anchors anchors.json]

Prints, per class: the images that hold it, its boxes, their width, height and sqrt(w * h)
percentiles in pixels at the training size (the network sees every image resized to 300x300),
their aspect ratios (w / h at that size), and the default-box coverage: the fraction of its
boxes that at least one default box overlaps at IoU >= 0.5 (net/anchor_coverage.py), and the
median best IoU, for the anchors the data would train with (--anchor_preset, else the preset the
manifest suggests, else voc: as train_ssd.py chooses). Then the suspect boxes with their image:
invalid (inverted or outside the image), tiny, huge, extreme aspect ratios, near duplicates.

--fit_anchors FILE fits SSD300 anchor sizes (and ratios) to the boxes (anchor_coverage.fit_preset:
the six feature maps and the boxes per location stay, so the head's shape does), prints the
coverage before and after, and writes FILE for train_ssd.py --anchor_preset=FILE. --plot FILE
draws the size and ratio histograms with the default boxes' sizes and ratios over them.

An entry module (it reads records through evaluation/ and builds params through utility/);
exit status 2 with one error line for a data directory it cannot read.
"""
import argparse
import json
import os
import sys

import numpy as np

from common import defaults

PERCENTILES = (5, 25, 50, 75, 95)
# Suspect boxes, at the training size (pixels of the 300x300 input).
TINY_SIDE = 8.0        # sqrt(w * h) below this: smaller than any default box by far
HUGE_FRACTION = 0.95   # both sides above this fraction of the image
EXTREME_RATIO = 5.0    # w / h above this or below its inverse (SSD300's widest default box: 3)
DUPLICATE_IOU = 0.9    # two boxes of one class in one image overlapping this much


def read_boxes(files, limit=None):
    """(records, boxes [N, 4], labels [N], image index [N]) of the shards `files` (boxes only:
    evaluation/ground_truth.scan_records); crowd regions are left out."""
    from evaluation.ground_truth import scan_records
    records = scan_records(files, limit=limit)
    boxes, labels, index = [np.zeros((0, 4), np.float32)], [np.zeros(0, np.int64)], [
        np.zeros(0, np.int64)]
    for k, record in enumerate(records):
        keep = record['iscrowd'] == 0
        boxes.append(np.asarray(record['boxes'], np.float32)[keep])
        labels.append(np.asarray(record['labels'], np.int64)[keep])
        index.append(np.full(int(keep.sum()), k, np.int64))
    return records, np.concatenate(boxes), np.concatenate(labels), np.concatenate(index)


def box_sizes(boxes, image_size=defaults.IMAGE_SIZE):
    """(widths, heights) in pixels at the training size of [N, 4] normalized boxes."""
    return ((boxes[:, 3] - boxes[:, 1]) * image_size, (boxes[:, 2] - boxes[:, 0]) * image_size)


def suspect_boxes(boxes, labels, image_index, image_size=defaults.IMAGE_SIZE):
    """[(box index, reason)] of the boxes worth a look, in box order: 'invalid' (inverted, empty
    or outside [0, 1]: such boxes turn the loss into NaN), 'tiny', 'huge', 'extreme ratio',
    'duplicate' (a box of the same class and image overlapping an earlier one at IoU >=
    DUPLICATE_IOU)."""
    from net.anchor_coverage import best_anchor_iou
    widths, heights = box_sizes(boxes, image_size)
    found = []
    for k in range(len(boxes)):
        w, h = widths[k], heights[k]
        if w <= 0 or h <= 0 or boxes[k].min() < 0 or boxes[k].max() > 1:
            found.append((k, 'invalid box (%s)' % ', '.join('%.3f' % v for v in boxes[k])))
        elif np.sqrt(w * h) < TINY_SIDE:
            found.append((k, 'tiny: %.1f x %.1f px at %d' % (w, h, image_size)))
        elif w > HUGE_FRACTION * image_size and h > HUGE_FRACTION * image_size:
            found.append((k, 'huge: covers the whole image'))
        elif w / h > EXTREME_RATIO or h / w > EXTREME_RATIO:
            found.append((k, 'extreme aspect ratio w/h = %.2f' % (w / h)))
    for image in np.unique(image_index):
        members = np.flatnonzero(image_index == image)
        for j, k in enumerate(members[1:], 1):
            same = members[:j][labels[members[:j]] == labels[k]]
            if len(same) and best_anchor_iou(boxes[k:k + 1], boxes[same])[0] >= DUPLICATE_IOU:
                found.append((k, 'duplicate: IoU >= %.1f with another box of its class'
                              % DUPLICATE_IOU))
    return sorted(found)


def _percentiles(values):
    if not len(values):
        return '-'
    return '/'.join('%.0f' % v if v >= 10 else '%.1f' % v
                    for v in np.percentile(values, PERCENTILES))


def class_table(records, boxes, labels, image_index, class_names, summary,
                image_size=defaults.IMAGE_SIZE):
    """The report's per-class lines (str), `summary` being anchor_coverage.coverage's."""
    widths, heights = box_sizes(boxes, image_size)
    side = np.sqrt(np.maximum(widths, 0) * np.maximum(heights, 0))
    ratio = widths / np.maximum(heights, 1e-9)
    head = ('%-14s %6s %6s  %-22s %-22s %-22s %-26s %8s %6s'
            % ('class', 'images', 'boxes', 'width px',
               'height px', 'sqrt(w*h) px', 'ratio w/h', 'coverage', 'best'))
    lines = [head]
    for label, stats in summary['per_class'].items():
        mine = labels == label
        name = class_names[label] if label < len(class_names) else 'class_%d' % label
        lines.append('%-14s %6d %6d  %-22s %-22s %-22s %-26s %8s %6s' % (
            name[:14], len(np.unique(image_index[mine])), int(mine.sum()),
            _percentiles(widths[mine]), _percentiles(heights[mine]), _percentiles(side[mine]),
            ' '.join('%.2f' % v for v in np.percentile(ratio[mine], PERCENTILES))
            if mine.any() else '-',
            '%.1f%%' % (100 * stats['coverage']) if stats['boxes'] else '-',
            '%.2f' % stats['median_best_iou'] if stats['boxes'] else '-'))
    lines.append('%-14s %6d %6d  %-22s %-22s %-22s %-26s %8s %6s' % (
        'all', len(records), len(boxes), _percentiles(widths), _percentiles(heights),
        _percentiles(side), ' '.join('%.2f' % v for v in np.percentile(ratio, PERCENTILES))
        if len(boxes) else '-',
        '%.1f%%' % (100 * summary['coverage']) if summary['boxes'] else '-',
        '%.2f' % summary['median_best_iou'] if summary['boxes'] else '-'))
    return lines


def default_box_shapes(spec, image_size=defaults.IMAGE_SIZE):
    """[(layer, sqrt(h * w) px, w / h)] of every anchor type of `spec` (net/anchors)."""
    from net import anchors as anchor_lib
    shapes = []
    for layer in range(len(spec['feature_shapes'])):
        heights, widths = anchor_lib.layer_anchor_sizes(spec, layer)
        shapes.extend((layer, float(np.sqrt(h * w)) * image_size, float(w / h))
                      for h, w in zip(heights, widths))
    return shapes


def plot(path, boxes, labels, class_names, specs, image_size=defaults.IMAGE_SIZE):
    """Writes the size (sqrt(w * h) px) and ratio (w / h) histograms per class to `path`, with
    the default boxes of each spec in `specs` ([(name, spec)]) drawn over them."""
    import matplotlib
    matplotlib.use('Agg')
    from matplotlib import pyplot as plt
    widths, heights = box_sizes(boxes, image_size)
    keep = (widths > 0) & (heights > 0)
    side, ratio, labels = np.sqrt(widths * heights)[keep], (widths / heights)[keep], labels[keep]
    figure, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    size_bins = np.geomspace(max(1.0, side.min() / 1.2) if len(side) else 1, image_size * 1.2, 40)
    ratio_bins = np.geomspace(0.1, 10, 40)
    for label in sorted(set(labels.tolist())):
        name = class_names[label] if label < len(class_names) else 'class_%d' % label
        left.hist(side[labels == label], bins=size_bins, alpha=0.5, label=name)
        right.hist(ratio[labels == label], bins=ratio_bins, alpha=0.5, label=name)
    styles = (('black', '--'), ('tab:red', ':'))
    for (name, spec), (color, style) in zip(specs, styles):
        shapes = default_box_shapes(spec, image_size)
        for k, (_, size, ratio_value) in enumerate(shapes):
            left.axvline(size, color=color, linestyle=style, linewidth=0.8,
                         label='default boxes (%s)' % name if k == 0 else None)
        for k, value in enumerate(sorted({round(r, 3) for _, _, r in shapes})):
            right.axvline(value, color=color, linestyle=style, linewidth=0.8,
                          label='default ratios (%s)' % name if k == 0 else None)
    left.set_xscale('log')
    left.set_xlabel('box size sqrt(w*h), pixels at %dx%d' % (image_size, image_size))
    left.set_ylabel('boxes')
    right.set_xscale('log')
    right.set_xlabel('aspect ratio w/h at %dx%d' % (image_size, image_size))
    left.legend(fontsize=8)
    right.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def _coverage_lines(title, summary, class_names):
    from net.anchor_coverage import coverage_line
    return '%s: %s; median best IoU %.2f' % (title, coverage_line(summary, class_names),
                                             summary['median_best_iou'])


def run(args, out=sys.stdout):
    """The report of the parsed `args` (build_parser); returns the exit status."""
    from dataset.class_names import class_names_of
    from dataset.shard_checks import check_shards
    from net import anchor_coverage, anchors as anchor_lib
    from utility import ssd_model, trainer

    files = check_shards(args.data_dir, args.split)
    class_names, _ = class_names_of(args.data_dir, args.split)
    class_names = list(class_names)
    preset = trainer.anchor_preset(args)
    spec = ssd_model.make_params(anchor_preset=preset, backbone=args.backbone,
                                 num_classes=len(class_names))['anchor_spec']
    records, boxes, labels, image_index = read_boxes(files, args.max_images)
    print('%s, split %s: %d images%s, %d boxes, %d classes; sizes in pixels at the %dx%d '
          'training size (percentiles %s)'
          % (args.data_dir, args.split, len(records),
             ' (the first %d)' % args.max_images if args.max_images == len(records) else '',
             len(boxes), len(class_names) - 1, spec['image_size'], spec['image_size'],
             '/'.join(map(str, PERCENTILES))), file=out)
    print('%d images hold no box.' % sum(1 for r in records if not len(r['labels'])), file=out)
    summary = anchor_coverage.box_coverage(boxes, labels, spec, len(class_names))
    name = preset if isinstance(preset, str) else args.anchor_preset
    print('Default-box coverage: boxes with a default box at IoU >= 0.5, anchors %s (%d default '
          'boxes); "best" is the median best IoU.' % (name, anchor_lib.num_anchors(spec)),
          file=out)
    for line in class_table(records, boxes, labels, image_index, class_names, summary,
                            spec['image_size']):
        print(line, file=out)
    suspects = suspect_boxes(boxes, labels, image_index, spec['image_size'])
    print('%d suspect boxes%s' % (len(suspects), ':' if suspects else '.'), file=out)
    for k, reason in suspects[:args.max_suspects]:
        record = records[image_index[k]]
        name_k = class_names[labels[k]] if labels[k] < len(class_names) else labels[k]
        pixels = boxes[k] * np.array([record['height'], record['width']] * 2)
        print('  %s: %s box [xmin %.0f, ymin %.0f, xmax %.0f, ymax %.0f] px: %s'
              % (record['filename'], name_k, pixels[1], pixels[0], pixels[3], pixels[2],
                 reason), file=out)
    if len(suspects) > args.max_suspects:
        print('  ... and %d more (--max_suspects)' % (len(suspects) - args.max_suspects),
              file=out)
    specs = [(str(name), spec)]
    if args.fit_anchors:
        print('Fitting default-box sizes to the %d boxes ...' % len(boxes), file=out, flush=True)
        fitted, fitted_spec = anchor_coverage.fit_preset(
            boxes, labels, spec, progress=lambda text: print('  ' + text, file=out, flush=True))
        after = anchor_coverage.box_coverage(boxes, labels, fitted_spec, len(class_names))
        print(_coverage_lines('Coverage before (%s)' % name, summary, class_names), file=out)
        print(_coverage_lines('Coverage after (fitted)', after, class_names), file=out)
        with open(args.fit_anchors, 'w', encoding='utf-8') as f:
            json.dump(fitted, f, indent=2)
            f.write('\n')
        print('Wrote %s: scales %s (were %s); train with: python3 train_ssd.py --data_dir %s '
              '--anchor_preset=%s' % (args.fit_anchors, ', '.join(
                  '%.3f' % s for s in fitted['anchor_scales']), ', '.join(
                  '%.3f' % s for s in spec['anchor_scales']), args.data_dir, args.fit_anchors),
              file=out)
        specs.append(('fitted', fitted_spec))
    if args.plot:
        print('Wrote %s' % plot(args.plot, boxes, labels, class_names, specs,
                                spec['image_size']), file=out)
    return 0


def build_parser():
    parser = argparse.ArgumentParser(
        prog='python3 -m dataset.report',
        description='Per-class box statistics of converted records and the coverage of their '
                    'boxes by SSD\'s default boxes; optionally fits default-box sizes.')
    parser.add_argument('--data_dir', default=defaults.DATA_DIR,
                        help='folder with the <split>-* shards and manifest.json '
                             '(default: %(default)s)')
    parser.add_argument('--split', default='train',
                        help='train or val (default: %(default)s)')
    parser.add_argument('--anchor_preset', default='',
                        help='default boxes to measure: a preset name (voc, coco) or a fitted '
                             'json; empty: the one train_ssd.py would use for this data')
    parser.add_argument('--backbone', default=defaults.BACKBONE,
                        help='backbone (its feature-map sizes place the default boxes; at '
                             '300x300 every registered one gives SSD300\'s) (default: '
                             '%(default)s)')
    parser.add_argument('--fit_anchors', default='',
                        help='write default-box sizes fitted to these boxes to this json file '
                             '(for train_ssd.py --anchor_preset=FILE)')
    parser.add_argument('--plot', default='',
                        help='write size and ratio histograms with the default boxes to this '
                             'image file (.png)')
    parser.add_argument('--max_images', type=int, default=None,
                        help='read only the first N records (default: all)')
    parser.add_argument('--max_suspects', type=int, default=30,
                        help='suspect boxes listed (default: %(default)s)')
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.max_images is not None and args.max_images < 1:
        print('error: --max_images=%d must be positive.' % args.max_images, file=sys.stderr)
        return 2
    try:
        return run(args)
    except (ValueError, FileNotFoundError) as e:
        print('error: %s' % e, file=sys.stderr, flush=True)
        return 2


if __name__ == '__main__':
    os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
    from common import console
    console.quiet_logs()
    sys.exit(main())
