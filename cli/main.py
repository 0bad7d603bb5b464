"""The ``geocloud`` command group and the one place that turns errors into exit codes.

User errors (:class:`~geocloud.errors.GeocloudError`, click usage errors) print one line
and exit 2; anything else is an internal error: one line and exit 1.  ``--debug`` shows
the traceback.
"""

from __future__ import annotations

import contextlib
import sys
from typing import Any

import click

from geocloud._version import __version__
from geocloud.errors import GeocloudError


class GeocloudGroup(click.Group):
    """A click group whose commands report errors in one line."""

    def main(self, *args: Any, standalone_mode: bool = True, **kwargs: Any) -> Any:
        try:
            rv = super().main(*args, standalone_mode=False, **kwargs)  # type: ignore[call-overload]
        except click.UsageError as exc:
            hint = f" (see '{exc.ctx.command_path} --help')" if exc.ctx else ""
            click.echo(f"geocloud: error: {exc.format_message()}{hint}", err=True)
            sys.exit(2)
        except click.ClickException as exc:
            click.echo(f"geocloud: error: {exc.format_message()}", err=True)
            sys.exit(exc.exit_code)
        except click.Abort:
            click.echo("geocloud: aborted", err=True)
            sys.exit(1)
        if not standalone_mode:
            return rv
        sys.exit(rv if isinstance(rv, int) else 0)

    def invoke(self, ctx: click.Context) -> Any:
        debug = bool(ctx.params.get("debug")) or "--debug" in sys.argv
        try:
            return super().invoke(ctx)
        except GeocloudError as exc:
            if debug:
                raise
            click.echo(f"geocloud: error: {exc}", err=True)
            ctx.exit(exc.exit_code)
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException):
            raise
        except KeyboardInterrupt:
            click.echo("geocloud: interrupted; no partial outputs were kept", err=True)
            ctx.exit(130)
        except Exception as exc:  # noqa: BLE001 - the one place internal errors are reported
            if isinstance(exc, BrokenPipeError) and _broken_stdio():
                # `geocloud info SCENE | head -1`: the reader went away.  End quietly with
                # the status of a process killed by SIGPIPE, as other command-line tools do
                # (only when it was our own output that closed, not a socket, say).
                ctx.exit(_silence_stdio())
            if debug:
                raise
            first = str(exc).splitlines()[0] if str(exc) else ""
            click.echo(
                f"geocloud: internal error: {type(exc).__name__}: {first} (rerun as 'geocloud --debug "
                f"{ctx.invoked_subcommand or ''} ...' for the traceback and report it)",
                err=True,
            )
            ctx.exit(1)


@click.group(cls=GeocloudGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="geocloud")
@click.option("--debug", is_flag=True, help="Show tracebacks and debug logging.")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """geocloud: find the clouds in whole 4-band satellite scenes.

    Writes cloud masks, scores, opacity, declouded rasters, polygons and statistics as
    Cloud-Optimised GeoTIFFs and GIS vector files.
    """
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug
    from geocloud.runtime import quiet_gdal, tune_malloc

    tune_malloc()  # before any worker thread starts: see geocloud/runtime.py
    if not debug:
        quiet_gdal()


# (train_matting and train_restore register "geocloud train matting" and "... restore")
from . import train_matting, train_restore  # noqa: E402,F401
from .catalog import catalog  # noqa: E402
from .evaluate import evaluate  # noqa: E402
from .info import info  # noqa: E402
from .process import process  # noqa: E402
from .train import train  # noqa: E402

cli.add_command(process)
cli.add_command(info)
cli.add_command(catalog)
cli.add_command(train)
cli.add_command(evaluate)


def _broken_stdio() -> bool:
    """Whether stdout or stderr is a pipe whose reading end has closed."""
    import select

    poll = select.poll()
    for stream in (sys.stdout, sys.stderr):
        try:
            poll.register(stream.fileno(), select.POLLOUT)
        except (AttributeError, OSError, ValueError):  # no file descriptor (e.g. captured)
            continue
    return any(event & (select.POLLERR | select.POLLHUP) for _, event in poll.poll(0))


def _silence_stdio() -> int:
    """Point stdout and stderr at /dev/null (their buffers could not be flushed at exit
    either) and return the exit status of a process killed by SIGPIPE."""
    import os
    import signal

    devnull = os.open(os.devnull, os.O_WRONLY)
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(AttributeError, OSError, ValueError):
            os.dup2(devnull, stream.fileno())
    os.close(devnull)
    return 128 + signal.SIGPIPE


def main() -> None:
    """Console-script entry point."""
    from geocloud.runtime import exit_on_signals

    # SIGTERM (a scheduler or `kill`) unwinds like ^C, so temporary files are removed;
    # both are held back while a worker thread starts (see geocloud/runtime.py)
    exit_on_signals()
    try:
        cli(prog_name="geocloud")
    except SystemExit as exc:
        if exc.code is None or isinstance(exc.code, int):
            _exit_now(exc.code or 0)
        raise
    _exit_now(0)


def _exit_now(code: int) -> None:
    """End the process without Python's interpreter teardown, when that is safe.

    Tearing down a process that imported torch takes 0.5-1 s on a 2-core machine (about
    15 % of a run on the sample scene, paid again for every scene of a shell loop), and does
    nothing for geocloud: every output is complete and renamed by now.  The atexit handlers
    still run and the streams are flushed.  If a thread other than the main one is still
    alive, nothing is skipped (return to the normal exit, which waits for it).
    """
    import atexit
    import logging
    import os
    import threading

    if any(t is not threading.main_thread() and not t.daemon for t in threading.enumerate()):
        return
    atexit._run_exitfuncs()
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # closed, or a broken pipe
            stream.flush()
    os._exit(code)


if __name__ == "__main__":  # pragma: no cover
    main()
