"""Property-based fuzzing of fxgrow over random architectures (see docs/robustness.md).

* ``archs``: a random "program" (a list of op specs over a tensor pool), its hypothesis
  strategy, and the fx-traceable ``nn.Module`` built from it.
* ``check``: the properties -- widen / deepen give an exact student or a named refusal, every
  group widens exactly on its own, and a numerical symmetry probe of the analysis.
"""
