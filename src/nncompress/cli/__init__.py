"""The ``nncompress`` command line: arguments -> configs -> pipeline calls.

Errors of ours become one line on stderr and exit status 1; progress bars go
to stderr so ``--json`` output on stdout stays machine-readable.

Each command is a function ``cmd_NAME(args, progress, pending)`` (``parser.build_parser`` names it);
``pending`` is the run it starts, if any: the folder removed again when the run fails before it
starts, and the folder the "continue with" hint names when it is interrupted.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from typing import Any, Optional, Sequence

from nncompress.atomic import interrupt_unless_writing
from nncompress.cli.checks import _check_inputs, _check_output
from nncompress.cli.parser import build_parser
from nncompress.errors import ConfigError, NNCompressError, OutputError
from nncompress.progress import ProgressBars
from nncompress.runguard import PendingRun

__all__ = ["build_parser", "main"]


def _decode_limits(args: argparse.Namespace) -> Any:
    """The --max-decoded-mb limits for every .nnc file the command reads (none given: the defaults)."""
    from contextlib import nullcontext
    from nncompress.modelfile import decode_limits

    mb = getattr(args, "max_decoded_mb", None)
    if mb is None:
        return nullcontext()
    if not mb > 0 or mb > 2**40:
        raise ConfigError(f"--max-decoded-mb must be a positive number of megabytes, not {mb}")
    return decode_limits(int(mb * 2**20))


def _resume_hint(args: argparse.Namespace, pending: PendingRun) -> str:
    """How to continue the run ``pending`` names ("" when there is none to continue)."""
    run_dir = pending.resume_dir
    if not run_dir:
        return ""
    report = f" --report {args.report}" if getattr(args, "report", None) else ""
    from nncompress.distributed import launched

    launcher = f"torchrun --nproc_per_node={os.environ.get('LOCAL_WORLD_SIZE', '2')} -m " if launched() else ""
    return f"; continue with: {launcher}nncompress compress --resume --run-dir {run_dir}{report}"


def _sigterm_as_interrupt(signum: int, frame: Any) -> None:
    """SIGTERM ends a run like Ctrl-C, and neither cuts a file write short: files stay whole and the run can
    be resumed."""
    interrupt_unless_writing()


def main(argv: Optional[Sequence[str]] = None) -> int:
    try:
        previous = {sig: signal.signal(sig, _sigterm_as_interrupt) for sig in (signal.SIGTERM, signal.SIGINT)}
    except ValueError:  # not the main thread: leave signals alone
        return _main(argv)
    try:
        return _main(argv)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    from nncompress import distributed

    try:
        started = distributed.init_from_env()  # under torchrun: one rank of several
    except NNCompressError as exc:
        print(f"nncompress: error: {exc}", file=sys.stderr)
        return 1
    code = _run_command(args)
    if started:
        if code == 0:
            distributed.barrier("finishing")  # every rank is done before any leaves
        # gloo's threads may abort the process when the group is torn down while a peer leaves
        # ("terminate called without an active exception"): flush and leave without tearing it down
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


def _run_command(args: argparse.Namespace) -> int:
    from nncompress.distributed import is_main, rank
    from nncompress.errors import DistributedError

    main_rank = is_main()  # other ranks under torchrun stay quiet: no bars, warnings or output
    logging.basicConfig(
        level=(logging.INFO if args.verbose else logging.WARNING) if main_rank else logging.ERROR,
        stream=sys.stderr,
        format="%(levelname)s %(name)s: %(message)s",
    )
    pending = PendingRun()
    bars = ProgressBars(enabled=not args.quiet and not getattr(args, "json", False) and main_rank)
    try:
        _check_inputs(args)
        if args.command != "compress":  # compress checks its outputs itself (--resume reads them)
            _check_output(getattr(args, "out", None), folder=args.command in ("sensitivity", "demo"))
        with _decode_limits(args):
            args.func(args, bars, pending)
    except DistributedError as exc:  # a rank lost: every rank says so, with the way to resume
        bars.close()
        print(f"nncompress: error: {exc}{_resume_hint(args, pending)}", file=sys.stderr)
        return 1
    except NNCompressError as exc:
        bars.close()
        hint = _resume_hint(args, pending) if isinstance(exc, OutputError) else ""  # a full disk: free space, continue
        if main_rank:  # the other ranks met the same error (rank 0 shares what it finds)
            print(f"nncompress: error: {exc}{hint}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # e.g. `nncompress inspect f.nnc | head`: the reader left, nothing to say
        sys.stderr = open(os.devnull, "w")
        return 0
    except OSError as exc:
        bars.close()
        where = f": {exc.filename}" if exc.filename else ""
        print(f"nncompress: error: {exc.strerror or exc}{where}{_resume_hint(args, pending)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        bars.close()
        from nncompress.distributed import launched

        what = f"rank {rank()} stopped (torchrun ends every rank when one fails)" if launched() else "interrupted"
        print(f"nncompress: {what}; no output file was left half-written{_resume_hint(args, pending)}", file=sys.stderr)
        return 130
    bars.close()
    return 0
