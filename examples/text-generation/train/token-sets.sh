#!/usr/bin/env bash
# Token sets for judging compression of the example model (run from this folder after prepare.sh; Debian packages
# bible-kjv, sentencepiece, python3-onnx): both are int64 [rows, 128] TensorProtos, each row 128 consecutive tokens
# of the verse stream the model was trained on ([BOS] + pieces per verse).
#   eval-tokens.pb         32 rows from the held-out verses (every 20th verse): `kiln eval --tokens`
#   calibration-tokens.pb  16 rows from the training verses: `--calibration` / CalibrationData
#   calibration-large-tokens.pb  64 rows from the training verses (8,192 tokens), for the methods that fit many
#                          parameters per layer to the data (reconstruct's low-rank refit)
set -euo pipefail
cd "$(dirname "$0")"
test -f corpus/train.txt || ./prepare.sh
/usr/bin/python3 - <<'PY'
import subprocess, numpy as np, onnx
from onnx import numpy_helper

def stream(path):
    out = subprocess.run(["spm_encode", "--model=../Models/tokenizer.model", "--output_format=id", path], check=True, capture_output=True, text=True).stdout
    ids = []
    for line in out.splitlines():
        ids.append(1)
        ids.extend(int(t) for t in line.split())
    return np.array(ids, dtype=np.int64)

def rows(ids, n, length=128, stride=None):
    stride = stride or (len(ids) - length) // n
    return np.stack([ids[i * stride:i * stride + length] for i in range(n)])

for name, path, n in [("eval-tokens.pb", "corpus/val.txt", 32), ("calibration-tokens.pb", "corpus/train.txt", 16),
                       ("calibration-large-tokens.pb", "corpus/train.txt", 64)]:
    t = numpy_helper.from_array(rows(stream(path), n), name="input_ids")
    open(name, "wb").write(t.SerializeToString())
    print(name, t.dims)
PY
