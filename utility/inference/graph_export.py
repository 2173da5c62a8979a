"""ONNX and OpenVINO exports of an SSD300 checkpoint (export_ssd.py --format onnx|openvino).

Both convert the TFLite export's graph (tflite_export.build_graph: the one model_fn in PREDICT
mode, restored as the SavedModel is, the eval resize's output as input, channel order and mean
subtraction inside), frozen into constants:
  * ONNX through tf2onnx (opset OPSET, which onnxruntime's CPU provider runs), written as
    model.onnx;
  * OpenVINO through openvino.convert_model (its TensorFlow front end reads the GraphDef), saved
    as model.xml + model.bin, FP32 weights or, with compress 'fp16', FP16 weights
    (model_fp16.xml; the CPU plugin computes in FP32 either way).
NMS runs as one NonMaxSuppressionV4 per class (net/postprocess nms_ops='per_class', as in the
TFLite export): tf2onnx turns each into an ONNX NonMaxSuppression, OpenVINO into its own
NMS op. TF's combined op converts in neither (measured with tf2onnx 1.17.0: 'only implemented
for boxes shared across classes'; OpenVINO 2026.4.1's converter fails on the per-class box
gather in front of it), and the two select the same detections (tests/test_postprocess.py).
The input and outputs keep their TFLite names: image float32 [1, S, S, 3]; boxes [1, K, 4],
classes int32 [1, K], scores [1, K], num_detections int32 [1] (utility/inference/runner.py
runs them).

tf2onnx, onnx and openvino are optional (requirements-export.txt); a missing one is a
runner.MissingPackage error before anything is written.
"""
import os

from utility.inference import runner

FORMATS = ('onnx', 'openvino')
COMPRESS = ('none', 'fp16')
# ONNX opset of the export: NonMaxSuppression since 11; 17 is run by onnxruntime >= 1.13,
# TensorRT >= 8.6 and OpenVINO.
OPSET = 17
FILE_NAMES = {('onnx', 'none'): 'model.onnx', ('openvino', 'none'): 'model.xml',
              ('openvino', 'fp16'): 'model_fp16.xml'}


def frozen_graph(params, checkpoint):
    """The export graph of `checkpoint` (params from tflite_export.tflite_params) with its
    variables as constants: a GraphDef whose input is INPUT_NAME and outputs OUTPUT_NAMES."""
    import tensorflow as tf
    from utility import drivers
    from utility.inference import tflite_export
    with tf.Graph().as_default():
        _, outputs, spec = tflite_export.build_graph(params)
        with tf.compat.v1.Session() as session:
            drivers.restore_predict(session, spec, checkpoint)
            return tf.compat.v1.graph_util.convert_variables_to_constants(
                session, session.graph.as_graph_def(), [t.op.name for t in outputs])


def to_onnx(graph_def):
    """The ONNX ModelProto of a frozen_graph, its tensors named as the graph's ('image',
    'boxes', ...; tf2onnx appends ':0').

    Raises:
      RuntimeError: an op tf2onnx could not convert (the model would not load).
    """
    import logging
    from utility.inference import tflite_export
    onnx = runner.require('onnx', 'onnx', 'export_ssd.py --format onnx')
    tf2onnx = runner.require('tf2onnx', 'tf2onnx', 'export_ssd.py --format onnx')
    logging.getLogger('tf2onnx').setLevel(logging.ERROR)
    with tflite_export._quiet_stderr() as captured:
        try:
            model, _ = tf2onnx.convert.from_graph_def(
                graph_def, input_names=[runner.INPUT_NAME + ':0'],
                output_names=[name + ':0' for name in runner.OUTPUT_NAMES], opset=OPSET)
        except Exception as err:
            raise RuntimeError('ONNX conversion (tf2onnx %s) failed: %s\n%s' % (
                tf2onnx.__version__, err, captured.read()[-3000:])) from None
    renames = {name + ':0': name for name in (runner.INPUT_NAME,) + runner.OUTPUT_NAMES}
    graph = model.graph
    for value in list(graph.input) + list(graph.output) + list(graph.value_info):
        value.name = renames.get(value.name, value.name)
    for node in graph.node:
        for i, name in enumerate(node.input):
            node.input[i] = renames.get(name, name)
        for i, name in enumerate(node.output):
            node.output[i] = renames.get(name, name)
    # tf2onnx leaves an op it cannot convert in the graph under its TF name and only logs it
    # (TF's CombinedNonMaxSuppression did): name it here, not at the runtime's load.
    unknown = sorted({node.op_type for node in graph.node
                      if node.domain not in ('', 'ai.onnx')
                      or not onnx.defs.has(node.op_type)})
    if unknown:
        raise RuntimeError('ONNX conversion (tf2onnx %s) left op(s) that are not ONNX '
                           'operators: %s.' % (tf2onnx.__version__, ', '.join(unknown)))
    return model


def to_openvino(graph_def):
    """The openvino.Model of a frozen_graph (its input [1, S, S, 3] as the graph's); each
    output carries its plain name ('boxes', ...) among its tensor names."""
    from utility.inference import tflite_export
    ov = runner.require('openvino', 'openvino', 'export_ssd.py --format openvino')
    with tflite_export._quiet_stderr() as captured:
        try:
            model = ov.convert_model(graph_def,
                                     output=[name + ':0' for name in runner.OUTPUT_NAMES])
        except Exception as err:
            raise RuntimeError('OpenVINO conversion (openvino %s) failed: %s\n%s' % (
                ov.get_version(), runner._first_line(err), captured.read()[-3000:])) from None
    for output in model.outputs:
        plain = [n for n in runner.OUTPUT_NAMES
                 if n in output.get_names() or n + ':0' in output.get_names()]
        if len(plain) != 1:
            raise RuntimeError('OpenVINO conversion lost the output names: %s'
                               % [sorted(o.get_names()) for o in model.outputs])
        output.get_tensor().add_names({plain[0]})
    model.inputs[0].get_tensor().add_names({runner.INPUT_NAME})
    return model


def export(params, checkpoint, export_dir, class_names, fmt, compress='none', log=None):
    """Writes <export_dir>/model.onnx (fmt 'onnx') or model.xml + model.bin (fmt 'openvino';
    model_fp16.xml + .bin with compress 'fp16'), labels.txt and <stem>.json
    (tflite_export.sidecar); returns the model's path. The packages are checked and the model
    converted before anything is written.
    """
    from common.console import notify
    if fmt not in FORMATS:
        raise ValueError('--format %r is not one of %s.' % (fmt, ', '.join(FORMATS)))
    if compress not in COMPRESS:
        raise ValueError('--compress %r is not one of %s.' % (compress, ', '.join(COMPRESS)))
    if compress != 'none' and fmt != 'openvino':
        raise ValueError('--compress %s needs --format openvino.' % compress)
    if fmt == 'onnx':
        for module in ('onnx', 'tf2onnx'):  # tf2onnx imports onnx: name the missing one
            runner.require(module, module, 'export_ssd.py --format onnx')
    else:
        runner.require('openvino', 'openvino', 'export_ssd.py --format openvino')
    from utility.inference import tflite_export  # TensorFlow: after the package checks
    params = tflite_export.tflite_params(params)
    path = os.path.join(export_dir, FILE_NAMES[(fmt, compress)])
    tflite_export.check_sidecar_target(path)
    notify(log, 'Converting %s to %s...' % (checkpoint, 'ONNX (opset %d)' % OPSET
                                            if fmt == 'onnx' else 'OpenVINO IR (%s)' % (
                                                'FP16 weights' if compress == 'fp16'
                                                else 'FP32')))
    graph_def = frozen_graph(params, checkpoint)
    if fmt == 'onnx':
        model = to_onnx(graph_def)
        os.makedirs(export_dir, exist_ok=True)
        tflite_export.write_atomic(path, model.SerializeToString())
        converter = {'tf2onnx': _version('tf2onnx'), 'opset': OPSET}
    else:
        import openvino as ov
        model = to_openvino(graph_def)
        os.makedirs(export_dir, exist_ok=True)
        # save_model writes the .xml and the .bin beside it: into a scratch pair first, then
        # renamed (.bin first: a reader of the new .xml finds its weights).
        scratch = os.path.join(export_dir, '.tmp-' + os.path.basename(path))
        try:
            ov.save_model(model, scratch, compress_to_fp16=compress == 'fp16')
            os.replace(scratch[:-4] + '.bin', path[:-4] + '.bin')
            os.replace(scratch, path)
        finally:
            for leftover in (scratch, scratch[:-4] + '.bin'):
                if os.path.exists(leftover):
                    os.remove(leftover)
        converter = {'openvino': ov.get_version(), 'compress': compress}
    tflite_export.write_labels_and_sidecar(path, tflite_export.sidecar(
        params, checkpoint, class_names, format=fmt, converter=converter))
    return path


def _version(module):
    import importlib
    return getattr(importlib.import_module(module), '__version__', '?')
