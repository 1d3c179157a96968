"""A fast start: --help/--version import no torch, `import fxgrow` imports no torch, and a
torchvision model imports neither timm nor transformers (each in a fresh interpreter)."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def fresh(code: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_help_and_version_import_no_torch():
    out = fresh("""
        import sys
        from fxgrow.cli import main
        for argv in (["--help"], ["--version"], ["widen", "--help"]):
            try:
                main(argv)
            except SystemExit as e:
                assert e.code == 0
        print(sorted(m for m in ("torch", "timm", "torchvision", "transformers")
                     if m in sys.modules))
    """)
    assert out.strip().endswith("[]")
    assert "fxgrow 0.1.0" in out and "usage: fxgrow widen" in out


def test_import_fxgrow_is_lazy_and_complete():
    out = fresh("""
        import sys
        import fxgrow
        assert "torch" not in sys.modules
        assert callable(fxgrow.widen) and callable(fxgrow.plan) and callable(fxgrow.draw)
        import fxgrow.planning.plan, fxgrow.drawing.render  # the subpackages do not replace them
        assert callable(fxgrow.plan) and callable(fxgrow.draw) and fxgrow.drawing.scene
        assert fxgrow.io.load is fxgrow.load and fxgrow.LoadError.__module__ == "fxgrow.errors"
        print(sorted(set(fxgrow.__all__) - set(dir(fxgrow))))
    """)
    assert out.strip() == "[]"


def test_torchvision_model_imports_neither_timm_nor_transformers():
    out = fresh("""
        import sys
        from fxgrow.cli import main
        assert main(["inspect", "torchvision:resnet18", "--input-shape", "1,3,32,32", "-q"]) == 0
        print("libs", sorted(m for m in ("timm", "transformers") if m in sys.modules))
    """)
    assert out.strip().endswith("libs []")
