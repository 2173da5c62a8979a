"""The glue floor's inference room: what eval_ssd.py, simple_ssd_demo.py and export_ssd.py share
(cli, checkpoint_params, image_files), eval's --watch loop (watch) and the TFLite export and
runner (tflite_export, tflite_runner)."""
