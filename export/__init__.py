"""Export a trained checkpoint to two ONNX graphs (encoder, decoder) in a model repository.

`onnx_export` needs torch (extra `train`); `onnx_eval` needs only onnxruntime and numpy.
"""
