"""Hugging Face in, Hugging Face out: grown students as the teacher's own class
(``student``), their configs found from shapes (``config``), grow to a target config
(``target``), HF folders written (``folder``) and the CLI's folder path (``cli``)."""

from .folder import is_folder, load_folder, save_folder  # noqa: F401
from .student import fresh_inputs, is_pretrained, to_pretrained  # noqa: F401
