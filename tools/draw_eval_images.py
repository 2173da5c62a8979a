"""Draws evaluated images with their ground truth and their detections side by side.

    python3 eval_ssd.py --data_dir=DATA --model_dir=MODEL            # writes MODEL/eval
    python3 tools/draw_eval_images.py --data_dir=DATA --eval_dir=MODEL/eval \
        --output=MODEL/eval/side_by_side.jpg

Reads the first --num_images records of the --split shards of --data_dir (images and ground
truth), the detections eval_ssd.py wrote for them to --eval_dir (the VOC results files
comp4_det_test_<class>.txt, written by the voc metric: --metric voc or both), and writes one
picture: per image, the ground-truth boxes on the left and the detections scoring at least
--score_threshold on the right (evaluation/side_by_side.py). No model runs here: the picture
shows exactly what was scored.
"""
import argparse
import glob
import os
import sys


def read_images(pattern, count):
    """[(image id, uint8 [H, W, 3] RGB, gt boxes_pixels [N, 4], gt labels [N])] of the first
    `count` records of `pattern`, in shard order."""
    import tensorflow as tf
    from dataset.pipeline import list_shards
    from dataset.records import parse_example
    from evaluation.ground_truth import image_id
    from evaluation.voc_metric import normalized_to_pixels
    found = []
    dataset = tf.data.TFRecordDataset(list_shards(pattern)).take(count).map(parse_example)
    for element in dataset:
        image = element['image'].numpy()
        labels = element['labels'].numpy()
        valid = labels > 0
        boxes = normalized_to_pixels(element['boxes'].numpy()[valid], image.shape[0],
                                     image.shape[1])
        found.append((image_id(element['filename'].numpy()), image, boxes, labels[valid]))
    return found


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--data_dir', required=True,
                        help='folder of the TFRecord shards and manifest.json that were evaluated')
    parser.add_argument('--split', default='val', help='shard name prefix (default: %(default)s)')
    parser.add_argument('--eval_dir', required=True,
                        help="eval_ssd.py's --output_dir (default there: <model_dir>/eval), "
                             'holding comp4_det_test_<class>.txt')
    parser.add_argument('--output', required=True, help='picture to write (.jpg or .png)')
    parser.add_argument('--num_images', type=int, default=8,
                        help='images drawn, the first ones of the split (default: %(default)s)')
    parser.add_argument('--score_threshold', type=float, default=0.5,
                        help='detections drawn score at least this (default: %(default)s)')
    parser.add_argument('--columns', type=int, default=2,
                        help='image pairs per row (default: %(default)s)')
    parser.add_argument('--panel_width', type=int, default=320,
                        help='width of each panel in pixels (default: %(default)s)')
    args = parser.parse_args(argv)
    if args.num_images < 1 or args.columns < 1 or args.panel_width < 16:
        print('error: --num_images and --columns must be >= 1 and --panel_width >= 16.',
              file=sys.stderr)
        return 2
    from common.console import quiet_logs
    quiet_logs()
    from dataset.class_names import class_names_of
    from evaluation import draw, side_by_side
    from evaluation.detections import RESULTS_PREFIX, read_results_files
    from evaluation.ground_truth import scan_records
    if not glob.glob(os.path.join(args.eval_dir, RESULTS_PREFIX + '*.txt')):
        print('error: no %s<class>.txt in %s; run eval_ssd.py --metric voc (or both) with '
              '--output_dir %s first.' % (RESULTS_PREFIX, args.eval_dir, args.eval_dir),
              file=sys.stderr)
        return 2
    pattern = os.path.join(args.data_dir, args.split + '-*')
    try:
        class_names, _ = class_names_of(args.data_dir, args.split)
        evaluated = [r['image_id'] for r in scan_records(pattern)]
        per_class = read_results_files(args.eval_dir, evaluated, class_names)
        images = read_images(pattern, args.num_images)
    except ValueError as err:
        print('error: %s' % err, file=sys.stderr)
        return 2
    index = {name: k for k, name in enumerate(evaluated)}
    pairs = []
    for name, image, gt_boxes, gt_labels in images:
        rows = [(label, row) for label, table in enumerate(per_class) for row in table
                if int(row[0]) == index[name]]
        detections = ([row[2:6] for _, row in rows], [label for label, _ in rows],
                      [row[1] for _, row in rows])
        pairs.append(side_by_side.pair(image, (gt_boxes, gt_labels), detections, class_names,
                                       args.score_threshold, args.panel_width, title=name))
    try:
        draw.write_image(args.output, side_by_side.figure(pairs, args.columns))
    except ValueError as err:
        print('error: %s' % err, file=sys.stderr)
        return 2
    print('Wrote %s: %d images of %s, ground truth left, detections >= %.2f right.'
          % (args.output, len(pairs), pattern, args.score_threshold))
    return 0


if __name__ == '__main__':
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    sys.exit(main())
