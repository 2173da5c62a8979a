"""A converter killed between the train and the val split leaves its output folder marked
incomplete, and training refuses it in one line (issue 24, item 8)."""
import contextlib
import io
import os

import pytest

from conftest import SAMPLE_NAME, TRAIN_FAST_FLAGS, run_script
from dataset.shard_checks import check_shards
from dataset.shard_writer import INCOMPLETE_NAME, ConversionError, IncompleteMarker
from dataset import voc_to_tfrecords as conv


def _convert(voc_sample_dir, out):
    return conv.convert_dataset(os.path.dirname(voc_sample_dir), out, [SAMPLE_NAME],
                                [SAMPLE_NAME], train_shards=1, validation_shards=1,
                                num_threads=1, train_list='train', validation_list='val',
                                reporter=conv.Reporter(out=io.StringIO(), err=io.StringIO()))


def _killed_after_train(voc_sample_dir, out, monkeypatch):
    """Runs the converter again and stops it, as a kill would, once the train split is done."""
    real = conv.convert_split

    def convert_split(dataset_directory, splits, list_name, name, *args):
        if name == 'val':
            raise KeyboardInterrupt   # no clean-up code runs after this point
        return real(dataset_directory, splits, list_name, name, *args)

    monkeypatch.setattr(conv, 'convert_split', convert_split)
    with pytest.raises(KeyboardInterrupt):
        _convert(voc_sample_dir, out)
    monkeypatch.setattr(conv, 'convert_split', real)


@pytest.fixture
def incomplete_dir(voc_sample_dir, tmp_path, monkeypatch):
    out = str(tmp_path / 'records')
    _convert(voc_sample_dir, out)
    check_shards(out, 'train')                       # a finished conversion passes
    assert not os.path.exists(os.path.join(out, INCOMPLETE_NAME))
    _killed_after_train(voc_sample_dir, out, monkeypatch)
    return out


def test_a_conversion_killed_between_splits_is_marked_and_refused(voc_sample_dir,
                                                                  incomplete_dir):
    assert os.path.exists(os.path.join(incomplete_dir, INCOMPLETE_NAME))
    with pytest.raises(ValueError) as raised:
        check_shards(incomplete_dir, 'train')
    message = str(raised.value)
    assert '\n' not in message
    assert message.startswith('%s is incomplete: the conversion started at ' % incomplete_dir)
    assert 'may come from different runs; re-run the converter' in message
    _convert(voc_sample_dir, incomplete_dir)            # run to the end: complete again
    assert not os.path.exists(os.path.join(incomplete_dir, INCOMPLETE_NAME))
    check_shards(incomplete_dir, 'train')


@pytest.mark.parametrize('written, was_there, error, kept', [
    (0, False, None, False),               # finished: the marker goes
    (0, False, ConversionError, False),    # failed cleanly before writing anything: goes too
    (0, True, ConversionError, True),      # ... but an earlier killed run's marker stays
    (1, False, ConversionError, True),     # a split of this run was written: stays
    (0, False, KeyboardInterrupt, True),   # killed: stays
])
def test_the_marker_goes_only_when_the_folder_is_whole(tmp_path, written, was_there, error,
                                                       kept):
    out = str(tmp_path / 'out')
    marker = os.path.join(out, INCOMPLETE_NAME)
    if was_there:
        os.makedirs(out)
        open(marker, 'w').close()
    with pytest.raises(error) if error else contextlib.nullcontext():
        with IncompleteMarker(out, ['train', 'val']) as running:
            assert os.path.exists(marker)
            for _ in range(written):
                running.split_written()
            if error:
                raise error('stop')
    assert os.path.exists(marker) == kept


@pytest.mark.slow
def test_training_refuses_an_incomplete_folder_in_one_line(incomplete_dir, tmp_path):
    model_dir = tmp_path / 'model'
    proc = run_script(['train_ssd.py', '--data_dir=' + incomplete_dir,
                       '--model_dir=' + str(model_dir), '--max_number_of_steps=1']
                      + TRAIN_FAST_FLAGS)
    errors = [line for line in proc.stderr.splitlines() if line.startswith('error: ')]
    assert proc.returncode == 2, (proc.stdout + proc.stderr)[-3000:]
    assert len(errors) == 1 and 'is incomplete: the conversion started at' in errors[0], \
        proc.stderr[-3000:]
    assert 'Traceback' not in proc.stderr
    assert not (model_dir / 'params.json').exists()
