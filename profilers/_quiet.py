"""Quiet, informative command-line output: logging set up by the commands, never at import.

The commands (`jaxlat`, `jaxlat-profile`) call `configure_logging` in `main()`. Library code
only logs to its module's logger (`logging.getLogger(__name__)`); what reaches the terminal,
and at which level, is the command's choice.

Third-party libraries imported on the torch path speak up on every call, through `logging`:
- torchao, imported by transformers' quantizers and by the LiteRT converter, logs
  "Failed to load .../torchao/_C_*.so" for each CUDA-only extension on a CPU-only install
  (`torchao/__init__.py`, logger "torchao", level WARNING);
- torch's pytree logs a deprecation of `register_constant()` on Enum subclasses for each of
  torchao's enums (`torch/utils/_pytree.py`, logger "torch.utils._pytree", level WARNING).
Neither is about the user's work, so the commands raise those loggers to ERROR unless asked
to be verbose. LiteRT's C++ runtime prints "INFO: Created TensorFlow Lite XNNPACK delegate"
to the process's stderr itself (no environment variable turns it off); `filtered_stderr`
drops that line around the calls that create an interpreter.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import tempfile
from collections.abc import Iterator, Sequence

#: Third-party loggers that report on their own installation, not on the user's work.
NOISY_LOGGERS = ("torchao", "torch.utils._pytree")

#: Lines a native library writes straight to stderr that say nothing to the user: LiteRT's
#: delegate notice, and the converter's oneDNN notice (printed on CPUs where oneDNN's custom
#: operations are on, e.g. with AVX-512 or AMX, through absl logging, which first says that it
#: was not initialized; TF_CPP_MIN_LOG_LEVEL does not reach it).
NOISY_STDERR = (
    re.compile(r"^INFO: Created TensorFlow Lite XNNPACK delegate for CPU\.$"),
    re.compile(r"^WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR$"),
    re.compile(r"^I\d{4} [\d:.]+ +\d+ port\.cc:\d+\] oneDNN custom operations are on\..*$"),
)

_HANDLER_MARK = "_jaxlat_cli_handler"


def configure_logging(verbosity: int = 0) -> None:
    """Set up logging for a command-line run (call from `main()` only).

    Args:
      verbosity: -1 (`-q`): warnings and errors only; 0: also the commands' progress notes
        (INFO); 1 (`-v`): also DEBUG, and third-party loggers at their own levels.
    """
    level = logging.WARNING if verbosity < 0 else logging.INFO if verbosity == 0 else logging.DEBUG
    handler = logging.StreamHandler(sys.stderr)  # the stderr of this call (tests replace it)
    handler.setFormatter(
        logging.Formatter("%(message)s" if verbosity < 1 else "%(name)s: %(levelname)s: %(message)s")
    )
    setattr(handler, _HANDLER_MARK, True)
    for name in ("jaxlat", "profilers"):
        logger = logging.getLogger(name)
        for old in [h for h in logger.handlers if getattr(h, _HANDLER_MARK, False)]:
            logger.removeHandler(old)  # main() may run several times in one process
        logger.addHandler(handler)
        logger.setLevel(level)
        logger.propagate = False
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.NOTSET if verbosity > 0 else logging.ERROR)


@contextlib.contextmanager
def filtered_stderr(patterns: Sequence[re.Pattern[str]] = NOISY_STDERR) -> Iterator[None]:
    """Inside the block, lines written to file descriptor 2 (by native code too) that match one
    of `patterns` are dropped; the others are written to stderr when the block ends."""
    try:
        fd = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):  # no real stderr (captured in-process): nothing to filter
        yield
        return
    sys.stderr.flush()
    saved = os.dup(fd)
    with tempfile.TemporaryFile(mode="w+b") as tmp:
        os.dup2(tmp.fileno(), fd)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, fd)
            os.close(saved)
            tmp.seek(0)
            kept = [
                line
                for line in tmp.read().decode(errors="replace").splitlines()
                if not any(p.match(line) for p in patterns)
            ]
            if kept:
                sys.stderr.write("\n".join(kept) + "\n")
                sys.stderr.flush()
