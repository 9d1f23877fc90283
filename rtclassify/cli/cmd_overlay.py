"""`rtclassify overlay`: the label overlay as a small always-on-top window."""
import click


@click.command()
@click.option("--connect", "endpoint", default=None, metavar="ENDPOINT",
              help="ZMQ endpoint of the daemon's --publish socket, e.g. tcp://127.0.0.1:5556.")
@click.option("--lsl", "lsl_name", default=None, metavar="NAME", help="Name of the daemon's LSL label outlet.")
@click.option("--screenshot", type=click.Path(dir_okay=False), default=None, metavar="FILE",
              help="Render offscreen once a label has arrived (or after --timeout-s), write the PNG, exit 0.")
@click.option("--timeout-s", default=20.0, show_default=True, help="With --screenshot: give up waiting after this long.")
@click.option("--after-labels", default=1, show_default=True,
              help="With --screenshot: wait for this many labels (a settled verdict needs a few sweeps).")
@click.option("--stale-s", default=5.0, show_default=True, help="Warn when no heartbeat came for this long.")
def overlay(endpoint, lsl_name, screenshot, timeout_s, after_labels, stale_s):
    """Show the current cell's type per headstage: class, confidence, sweeps, freshness."""
    import os
    import sys

    if bool(endpoint) == bool(lsl_name):
        raise click.UsageError("give exactly one of --connect ENDPOINT or --lsl NAME")
    if screenshot:
        os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    try:
        from plugins.feed import LslFeed, ZmqFeed
        from plugins.overlay import run_overlay
    except ImportError as exc:
        raise click.ClickException(str(exc)) from None
    feed = ZmqFeed(endpoint) if endpoint else LslFeed(lsl_name)
    run_overlay(feed, endpoint or f"LSL {lsl_name}", screenshot, timeout_s, stale_s, after_labels)
    if screenshot:
        click.echo(f"overlay: screenshot written to {screenshot}", err=True)
        sys.stdout.flush()
        sys.stderr.flush()
        # the PNG is written: skip the interpreter's teardown, where PySide6 + pyqtgraph can abort
        # while garbage-collecting Qt objects ("bool_dealloc"), which would turn success into a crash
        os._exit(0)
