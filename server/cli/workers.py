"""``shoptalk workers deploy|status``: the model workers (ASR, TTS, text encoder, ranker) as Ray Serve deployments."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from server.cli.common import DataDir, cli_settings

workers_app = typer.Typer(help="Model workers on a Ray cluster (several machines; see README 'Several machines').",
                          no_args_is_help=True)

Address = Annotated[str, typer.Option("--address", help="The Ray cluster: 'auto' (this machine's node) or "
                                                         "'head-host:6379'.")]
AsJson = Annotated[bool, typer.Option("--json", help="Print the status as JSON.")]


def _print_status(status: dict[str, dict[str, Any]], as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(status))
        return
    table = Table("role", "application", "status", "replicas", "message")
    for role, row in status.items():
        replicas = ", ".join(f"{n} {state.lower()}" for state, n in row["replicas"].items())
        table.add_row(role, row["app"], row["status"], replicas, row["message"])
    Console().print(table if status else "no model workers deployed")


@workers_app.command("deploy")
def deploy(
    data_dir: DataDir,
    address: Address = "auto",
    roles: Annotated[str | None, typer.Option("--roles", help="Comma-separated roles to deploy (default: "
                                                              "$SHOPTALK_RAY_WORKERS, all four).")] = None,
    replicas: Annotated[str, typer.Option("--replicas", help="Replicas per role: '2' or 'stt=2,ranker=1' "
                                                             "(the others: 1).")] = "1",
    num_cpus: Annotated[float, typer.Option("--num-cpus", help="CPUs Ray reserves for each replica (also its "
                                                               "torch threads unless SHOPTALK_CPU_THREADS is set).")] = 1.0,
    as_json: AsJson = False,
) -> None:
    """Deploy the model workers onto the Ray cluster (a no-op for those already running with these settings)."""
    from server.workers.deployments import deploy_workers, worker_roles

    settings = cli_settings(data_dir, ray_address=address, ray_workers=roles)
    try:
        status = deploy_workers(settings, address, replicas=replicas, num_cpus=num_cpus)
    except ValueError as err:
        raise typer.BadParameter(str(err)) from err
    _print_status({role: row for role, row in status.items() if role in worker_roles(settings)}, as_json)


@workers_app.command("status")
def status(address: Address = "auto", as_json: AsJson = False) -> None:
    """Show the deployed model workers and their replicas."""
    from server.workers.deployments import init_ray, workers_status

    init_ray(address)
    _print_status(workers_status(), as_json)
