# Imported at start-up by every Python process of the test session (tests/conftest.py puts this
# folder on PYTHONPATH). It does nothing except in a process DVC starts for a stage while
# DECISION_DISTILL_PARAMS_READS is set: there it records the params keys the stage reads
# (params_recorder.py, beside this file; checked by tests/test_params_declared.py).
import os

if os.environ.get("DVC_STAGE") and os.environ.get("DVC_ROOT") and os.environ.get("DECISION_DISTILL_PARAMS_READS"):
    import params_recorder

    params_recorder.install()
