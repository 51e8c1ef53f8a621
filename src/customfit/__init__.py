"""customfit: one training step, two drivers (keras.Model.fit and a loop).

Who owns what:

- `model.py`: `CustomModel`, Keras' default step split into hooks (the math);
- `loop.py`: `ManualLoop`, epochs, batches and callbacks as a Python loop;
- `steps.py`: a step turned into a compiled, distributed function;
- `checks.py`: every input check, run before any step;
- `timing.py`: `StepTimer`, time waiting for data vs. time in steps;
- `backup.py`: exact backup and resume, clean stops on Ctrl-C;
- `data.py`: user input turned into batches, epoch by epoch;
- `distribute.py`: multi-worker helpers (the chief, where each one writes);
- `errors.py`: the error types and how their messages read;
- `_keras_compat.py`: the few private Keras names used, in one place.
"""

# First: on a Keras customfit does not support, fail here, with the fix.
from customfit import _keras_compat  # noqa: F401
from customfit.backup import Backup
from customfit.errors import CustomFitError
from customfit.errors import InputTypeError
from customfit.errors import InputValueError
from customfit.errors import NotCompiledError
from customfit.errors import UnsupportedStrategyError
from customfit.loop import ManualLoop
from customfit.model import CustomModel
from customfit.timing import StepTimer

__version__ = "0.1.0"

__all__ = [
    "Backup",
    "CustomFitError",
    "CustomModel",
    "InputTypeError",
    "InputValueError",
    "ManualLoop",
    "NotCompiledError",
    "StepTimer",
    "UnsupportedStrategyError",
    "__version__",
]
