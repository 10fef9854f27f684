"""Writes model.onnx: a tiny two-layer MLP with a symbolic batch dim, used by the README's first command.
Run with Debian's python3 (python3-onnx, python3-numpy): /usr/bin/python3 make_model.py"""
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

rng = np.random.default_rng(0)
w1 = numpy_helper.from_array(rng.normal(0, 0.1, (16, 32)).astype(np.float32), "fc1.weight")
b1 = numpy_helper.from_array(np.zeros(32, np.float32), "fc1.bias")
w2 = numpy_helper.from_array(rng.normal(0, 0.1, (32, 4)).astype(np.float32), "fc2.weight")
b2 = numpy_helper.from_array(np.zeros(4, np.float32), "fc2.bias")
nodes = [
    helper.make_node("MatMul", ["x", "fc1.weight"], ["h0"], name="fc1/MatMul"),
    helper.make_node("Add", ["h0", "fc1.bias"], ["h1"], name="fc1/Add"),
    helper.make_node("Relu", ["h1"], ["h2"], name="relu"),
    helper.make_node("MatMul", ["h2", "fc2.weight"], ["h3"], name="fc2/MatMul"),
    helper.make_node("Add", ["h3", "fc2.bias"], ["logits"], name="fc2/Add"),
    helper.make_node("Softmax", ["logits"], ["probs"], name="softmax", axis=-1),
]
graph = helper.make_graph(
    nodes, "tiny_mlp",
    [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 16])],
    [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["batch", 4])],
    [w1, b1, w2, b2])
model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="kiln-examples")
model.ir_version = 8
onnx.checker.check_model(model, full_check=True)
onnx.save(model, "model.onnx")
