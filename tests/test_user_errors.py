"""Bad flags end in one line on stderr naming the flag and the fix, a nonzero exit, no traceback,
and nothing written (issue: "Nothing lost, nothing cryptic")."""
import os

import pytest

from conftest import TRAIN_FAST_FLAGS, assert_one_line_error, run_script, write_initial_checkpoint


def _train_flags(**changes):
    flags = [f for f in TRAIN_FAST_FLAGS if f.split('=')[0].lstrip('-') not in changes]
    return flags + ['--%s=%s' % kv for kv in changes.items()]


@pytest.mark.slow
@pytest.mark.parametrize('changes, fragments', [
    ({'batch_size': 0}, ['--batch_size=0 must be a positive integer']),
    ({'batch_size': -3}, ['--batch_size=-3 must be a positive integer']),
    ({'train_epochs': 0}, ['--train_epochs=0 must be at least 1']),
    ({'train_image_size': 512}, ['--train_image_size=512 is not supported',
                                 '--train_image_size=300']),
    ({'train_image_size': 200}, ['--train_image_size=200 is not supported']),
    ({'learning_rate': -0.01}, ['--learning_rate=-0.01 must be positive']),
    ({'save_checkpoints_secs': -1}, ['--save_checkpoints_secs=-1 must be >= 0']),
    ({'num_cpu_replicas': -1, 'max_number_of_steps': 1},
     ['--num_cpu_replicas=-1: use N >= 2 logical CPU devices', 'or 0 (the default)']),
    ({'num_cpu_replicas': 1, 'max_number_of_steps': 1},
     ['--num_cpu_replicas=1: use N >= 2 logical CPU devices']),
    ({'backbone': 'resnet152'}, ["Unknown backbone 'resnet152'; use one of vgg16, ",
                                 '(--backbone)']),
    ({'bf16': 'true', 'precision': 'fp32'}, ['--bf16 means --precision=bf16 and contradicts '
                                             '--precision=fp32']),
])
def test_bad_training_flags_are_one_line_errors_before_any_work(tfrecord_dir, tmp_path, changes,
                                                                fragments):
    model_dir = tmp_path / 'model'
    proc = run_script(['train_ssd.py', '--data_dir=' + tfrecord_dir,
                       '--model_dir=' + str(model_dir)] + _train_flags(**changes))
    assert_one_line_error(proc, *fragments)
    assert not model_dir.exists()  # nothing written, no 200 MB checkpoint


@pytest.mark.slow
def test_model_dir_that_is_a_file_is_a_one_line_error(tfrecord_dir, tmp_path):
    path = tmp_path / 'model'
    path.write_text('not a directory')
    proc = run_script(['train_ssd.py', '--data_dir=' + tfrecord_dir, '--model_dir=' + str(path)]
                      + TRAIN_FAST_FLAGS)
    assert_one_line_error(proc, '--model_dir=%s is a file' % path)
    assert path.read_text() == 'not a directory'


@pytest.fixture(scope='module')
def five_class_checkpoint(tmp_path_factory):
    return write_initial_checkpoint(str(tmp_path_factory.mktemp('five') / 'model.ckpt'), 5)


@pytest.mark.slow
def test_eval_of_a_checkpoint_with_another_class_count(five_class_checkpoint, tfrecord_dir,
                                                        tmp_path):
    proc = run_script(['eval_ssd.py', '--data_dir=' + tfrecord_dir,
                       '--checkpoint_path=' + five_class_checkpoint,
                       '--output_dir=' + str(tmp_path / 'eval')])
    assert_one_line_error(proc, 'was trained with 5 classes', '--num_classes=21',
                           'pass --num_classes=5')


@pytest.mark.slow
@pytest.mark.parametrize('script, flags', [
    ('export_ssd.py', []),
    ('simple_ssd_demo.py', ['--input=x.jpg']),
])
def test_export_and_demo_check_the_class_count_too(five_class_checkpoint, voc_sample_dir,
                                                   tmp_path, script, flags):
    image = os.path.join(voc_sample_dir, 'JPEGImages', '2012_000011.jpg')
    flags = [f.replace('x.jpg', image) for f in flags]
    # --num_classes given: without it the class count is read from the checkpoint itself
    # (issue 24, item 3), so only a flag can disagree with it.
    proc = run_script([script, '--checkpoint_path=' + five_class_checkpoint,
                       '--export_dir=' + str(tmp_path / 'e') if script == 'export_ssd.py'
                       else '--output_dir=' + str(tmp_path / 'd'), '--num_classes=21'] + flags)
    assert_one_line_error(proc, 'was trained with 5 classes')


@pytest.mark.slow
def test_eval_and_demo_batch_size_zero(trained_model_dir, tfrecord_dir, voc_sample_dir,
                                       tmp_path):
    proc = run_script(['eval_ssd.py', '--data_dir=' + tfrecord_dir,
                       '--model_dir=' + trained_model_dir, '--batch_size=0',
                       '--output_dir=' + str(tmp_path / 'eval')])
    assert_one_line_error(proc, '--batch_size=0 must be a positive integer')
    image = os.path.join(voc_sample_dir, 'JPEGImages', '2012_000011.jpg')
    proc = run_script(['simple_ssd_demo.py', '--checkpoint_path=' + trained_model_dir,
                       '--input=' + image, '--batch_size=0', '--output_dir=' + str(tmp_path)])
    assert_one_line_error(proc, '--batch_size=0 must be a positive integer')


@pytest.mark.slow
def test_output_paths_that_are_files_fail_before_inference(trained_model_dir, voc_sample_dir,
                                                           tmp_path):
    taken = tmp_path / 'taken'
    taken.write_text('a file')
    image = os.path.join(voc_sample_dir, 'JPEGImages', '2012_000011.jpg')
    proc = run_script(['simple_ssd_demo.py', '--checkpoint_path=' + trained_model_dir,
                       '--input=' + image, '--output_dir=' + str(taken)])
    assert_one_line_error(proc, '--output_dir=%s is a file' % taken)
    assert 'Detecting with' not in proc.stdout  # refused before inference ran
    proc = run_script(['export_ssd.py', '--model_dir=' + trained_model_dir,
                       '--export_dir=' + str(taken)])
    assert_one_line_error(proc, '--export_dir=%s is a file' % taken)
    assert taken.read_text() == 'a file'
