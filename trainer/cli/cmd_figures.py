"""`python -m trainer figures`: the README's figures section from a report."""
import json
from pathlib import Path

import click



@click.command()
@click.option("--report", "report_json", default="docs/report/report.json", show_default=True)
@click.option("--readme", default="docs/figures.md", show_default=True)
def figures(report_json, readme):
    """Refresh the README's figures section from a report.json."""
    from trainer.report import update_readme

    update_readme(json.loads(Path(report_json).read_text()), Path(readme))
    click.echo(f"figures from {report_json} written into {readme}")
