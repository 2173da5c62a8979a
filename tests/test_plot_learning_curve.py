"""tools/plot_learning_curve.py: one run or several runs (fp32 beside bf16) in one figure."""
import json

from conftest import import_or_skip

import_or_skip('matplotlib', 'tools/plot_learning_curve.py draws with it; in requirements.txt')

from tools import plot_learning_curve  # noqa: E402


def _fake_run(folder, scale):
    import tensorflow as tf
    model_dir = folder / 'model'
    writer = tf.summary.create_file_writer(str(model_dir))
    with writer.as_default():
        for step in (0, 20, 40):
            tf.summary.scalar('cls_loss', scale * (12.0 - step / 10), step=step)
            tf.summary.scalar('loc_loss', scale * (4.0 - step / 20), step=step)
    writer.close()
    history = folder / 'metrics_history.jsonl'
    history.write_text(''.join(json.dumps({'global_step': step, 'map_07': mean,
                                           'map_area': mean * 0.98}) + '\n'
                               for step, mean in ((0, 0.0), (40, 0.25 * scale))))
    return str(model_dir), str(history)


def test_two_runs_in_one_figure(tmp_path, capsys):
    fp32 = _fake_run(tmp_path / 'fp32', 1.0)
    bf16 = _fake_run(tmp_path / 'bf16', 1.1)
    assert plot_learning_curve.read_train_scalars(fp32[0])['cls_loss'][1] == (20, 10.0)
    output = tmp_path / 'both.png'
    assert plot_learning_curve.main([
        '--output', str(output), '--label', 'fp32', '--model_dir', fp32[0], '--history', fp32[1],
        '--label', 'bf16', '--model_dir', bf16[0], '--history', bf16[1]]) == 0
    assert output.read_bytes()[:4] == b'\x89PNG'
    printed = capsys.readouterr().out
    assert 'fp32: step     40  mAP VOC07 0.2500' in printed
    assert 'bf16: step     40  mAP VOC07 0.2750' in printed


def test_runs_and_histories_must_pair(tmp_path, capsys):
    run = _fake_run(tmp_path / 'one', 1.0)
    assert plot_learning_curve.main(['--output', str(tmp_path / 'x.png'), '--model_dir', run[0],
                                     '--model_dir', run[0], '--history', run[1]]) == 2
    assert 'one --history (and one --label, if any) per --model_dir' in capsys.readouterr().err
    assert not (tmp_path / 'x.png').exists()


def test_coco_ap_is_drawn_and_printed_when_the_history_has_it(tmp_path, capsys):
    model_dir, history = _fake_run(tmp_path / 'real', 1.0)
    with open(history, 'a') as f:
        f.write(json.dumps({'global_step': 60, 'map_07': 0.5, 'map_area': 0.52,
                            'coco': {'AP': 0.3125, 'AP50': 0.52}}) + '\n')
    output = tmp_path / 'real.png'
    assert plot_learning_curve.main(['--output', str(output), '--model_dir', model_dir,
                                     '--history', history]) == 0
    printed = capsys.readouterr().out
    assert 'step     60  mAP VOC07 0.5000  VOC2010+ 0.5200  COCO AP 0.3125' in printed
    assert 'step     40  mAP VOC07 0.2500  VOC2010+ 0.2450\n' in printed
