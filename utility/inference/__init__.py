"""The inference modules: what eval_ssd.py, simple_ssd_demo.py and export_ssd.py share
(cli, checkpoint_params, image_files), eval's --watch loop (watch), the exports for other
runtimes (tflite_export: TFLite; graph_export: ONNX, OpenVINO) and the runner of every exported
format (runner)."""
