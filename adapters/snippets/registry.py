"""The specimens, listed without importing them (several import torch at the top, as
their documents do): a module is imported when one of its implementations is first used."""
import importlib

MODULES = ("d2l_000", "keras_old_000", "numpy_002", "zhihu_003", "notion_004")
DOCUMENTS = {
    "000": "深入理解BatchNorm的原理、代码实现以及BN在CNN中的应用 (Chinese blog post; quotes d2l.ai and old Keras)",
    "001": "TensorFlow tf.layers.batch_normalization usage (Chinese blog post, jianshu.com)",
    "002": "batch normalization notes (Chinese, NumPy snippet)",
    "003": "Batch normalization (English translation of a Chinese post; LeNet with a hand-written BatchNorm)",
    "004": "Batch normalization（批归一化）(Chinese interview notes)",
}


def implementations():
    out = []
    for name in MODULES:
        out.extend(importlib.import_module(f"{__package__}.{name}").implementations())
    return out
