"""`rtclassify bench`: latency and throughput on this machine."""
import click


@click.command()
@click.option("--quick", is_flag=True, help="A run of under a minute (fewer samples, fewer scaling steps).")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), default=None, help="Write every figure here.")
@click.option("--markdown", "md_path", type=click.Path(dir_okay=False), default=None, help="Write a Markdown table here.")
@click.option("--plot", "png_path", type=click.Path(dir_okay=False), default=None, help="Write the scaling plot here.")
@click.option("--readme", default=None, type=click.Path(dir_okay=False), help="Refresh this README's bench section.")
@click.option("--data", "data_dir", type=click.Path(file_okay=False), default=None,
              help="Play real APs from this allen-ctdb-spikes folder (default: built-in neuron models).")
def bench(quick, json_path, md_path, png_path, readme, data_dir):
    """Measure detector, inference, end-to-end latency (ZMQ and LSL) and headstage scaling."""
    import json
    import sys
    import tempfile
    import time
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    if str(root) not in sys.path:  # bench/ lives beside the package in a source checkout
        sys.path.insert(0, str(root))
    from bench.report import plot_latency, render_markdown, update_readme
    from bench.suite import run_suite

    t0 = time.time()
    result = run_suite(quick, data_dir, Path(tempfile.mkdtemp(prefix="rtclassify-bench-")),
                       progress=lambda s: click.echo(f"bench: {s} ({time.time() - t0:.0f} s)", err=True))
    result["elapsed_s"] = round(time.time() - t0, 1)
    md = render_markdown(result)
    if json_path:
        Path(json_path).write_text(json.dumps(result, indent=1))
    if md_path:
        Path(md_path).write_text(md)
    if png_path:
        plot_latency(result, Path(png_path))
    if readme:
        update_readme(result, Path(readme), "rtclassify " + " ".join(sys.argv[1:]))
    click.echo(md)
