"""The fixed name tables of ``fxgrow.load``'s allowlist; :mod:`fxgrow.io.trust` resolves names
against them (its docstring states the invariant they serve).

``MODULE_PACKAGES``: where module classes may come from without ``trusted=``;
``SAFE_BUILTINS``, ``PURE_OPERATOR``, ``TENSOR_DUNDERS``: the builtins, ``operator`` functions
and Tensor dunders a graph may call; ``KNOWN_CLASSES``: module classes from elsewhere that
graphs contain; ``FILE_ARGUMENTS``: argument names that keep an ATen operator out."""

from __future__ import annotations

MODULE_PACKAGES = ("torch.nn", "torchvision", "timm", "transformers", "fxgrow")
"""Where module classes may come from without ``trusted=``."""

SAFE_BUILTINS = frozenset(
    {
        "getattr",
        "len",
        "int",
        "float",
        "bool",
        "min",
        "max",
        "abs",
        "round",
        "tuple",
        "list",
        "slice",
        "range",
        "divmod",
        "pow",
        "sum",
        "all",
        "any",
        "isinstance",
        "hasattr",
    }
)

PURE_OPERATOR = frozenset(
    {
        "add",
        "sub",
        "mul",
        "truediv",
        "floordiv",
        "mod",
        "pow",
        "neg",
        "pos",
        "abs",
        "invert",
        "matmul",
        "eq",
        "ne",
        "lt",
        "le",
        "gt",
        "ge",
        "and_",
        "or_",
        "xor",
        "not_",
        "truth",
        "getitem",
        "contains",
        "index",
        "lshift",
        "rshift",
        "concat",
        "is_",
        "is_not",
        "iadd",
        "isub",
        "imul",
        "itruediv",
        "ifloordiv",
        "imod",
        "ipow",
        "imatmul",
        "iand",
        "ior",
        "ixor",
        "setitem",
    }
)

TENSOR_DUNDERS = frozenset(
    {
        "__add__",
        "__radd__",
        "__iadd__",
        "__sub__",
        "__rsub__",
        "__isub__",
        "__mul__",
        "__rmul__",
        "__imul__",
        "__truediv__",
        "__rtruediv__",
        "__itruediv__",
        "__floordiv__",
        "__rfloordiv__",
        "__mod__",
        "__rmod__",
        "__pow__",
        "__rpow__",
        "__matmul__",
        "__rmatmul__",
        "__neg__",
        "__pos__",
        "__abs__",
        "__invert__",
        "__and__",
        "__rand__",
        "__or__",
        "__ror__",
        "__xor__",
        "__rxor__",
        "__eq__",
        "__ne__",
        "__lt__",
        "__le__",
        "__gt__",
        "__ge__",
        "__getitem__",
        "__setitem__",
        "__len__",
    }
)

KNOWN_CLASSES = {  # module classes outside MODULE_PACKAGES that graphs contain: forward is empty
    "torch.export._unlift.GuardsFn": lambda: (
        __import__("torch.export._unlift", fromlist=["GuardsFn"]).GuardsFn
    ),
}

FILE_ARGUMENTS = frozenset({"filename", "file", "path", "f"})
