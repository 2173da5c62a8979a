"""Tests of dataset/labels.py: the VOC label table."""
from dataset import labels


def test_label_table():
    assert len(labels.VOC_LABELS) == labels.NUM_CLASSES == 21
    assert labels.VOC_LABELS[0] == 'none'
    assert labels.VOC_LABELS[1] == 'aeroplane' and labels.VOC_LABELS[15] == 'person'
    assert labels.VOC_LABELS[20] == 'tvmonitor'
    assert list(labels.VOC_LABELS[1:]) == sorted(labels.VOC_LABELS[1:])
    assert labels.LABEL_IDS['dog'] == 12 and labels.LABEL_IDS['none'] == 0
