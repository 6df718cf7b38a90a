"""The command-line side of Terraform reading: the options and the load for ``run``/``validate``."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from emulator.arm.expressions import DeploymentScope
from emulator.errors import TemplateError
from emulator.model import GatewayConfig, with_backend_overrides

__all__ = ["add_arguments", "load_config", "wants_terraform"]


def add_arguments(
    source: argparse._MutuallyExclusiveGroup, command: argparse.ArgumentParser
) -> None:
    """``--terraform DIR`` / ``--terraform-plan FILE`` (in the template's exclusive group) and the
    variable options, which keep their command-line order between them (later wins)."""
    source.add_argument(
        "--terraform",
        type=Path,
        metavar="DIR",
        help="a Terraform configuration directory declaring azurerm_application_gateway",
    )
    source.add_argument(
        "--terraform-plan",
        type=Path,
        metavar="PLAN_JSON",
        help="`terraform show -json` output of a plan (for modules, data sources, count)",
    )
    command.add_argument(
        "--var",
        dest="tf_vars",
        action="append",
        type=lambda text: ("var", text),
        default=[],
        metavar="NAME=VALUE",
        help="a Terraform input variable (repeatable; with --var-file, later wins)",
    )
    command.add_argument(
        "--var-file",
        dest="tf_vars",
        action="append",
        type=lambda text: ("file", text),
        metavar="FILE",
        help="a .tfvars or .tfvars.json file (repeatable)",
    )


def wants_terraform(args: argparse.Namespace) -> bool:
    """True for ``--terraform``/``--terraform-plan``; refuses ``--var`` given with a template."""
    terraform = getattr(args, "terraform", None) is not None or (
        getattr(args, "terraform_plan", None) is not None
    )
    if not terraform and getattr(args, "tf_vars", None):
        raise TemplateError(
            "--var and --var-file set Terraform variables; this is an ARM template",
            fix="pass template parameters with --parameters NAME=VALUE, or use --terraform DIR",
            code="EmulatorTerraformVariable",
        )
    return terraform


def load_config(
    args: argparse.Namespace,
) -> tuple[GatewayConfig, Sequence[tuple[str, str]]]:
    """The gateway of ``--terraform DIR`` or ``--terraform-plan FILE``, as the CLI loads it."""
    from emulator.terraform import build_config, load_terraform
    from emulator.terraform.plan import load_plan

    parameters = [item for group in args.parameters for item in group]
    if parameters:
        raise TemplateError(
            "--parameters applies to ARM templates; a Terraform configuration takes variables",
            fix="pass --var NAME=VALUE or --var-file FILE instead",
            code="EmulatorTerraformVariable",
        )
    scope = DeploymentScope(
        subscription_id=args.subscription,
        resource_group=args.resource_group,
        location=args.location,
    )
    if args.terraform is not None:
        tf = load_terraform(args.terraform, var_args=args.tf_vars, scope=scope)
    else:
        if args.tf_vars:
            raise TemplateError(
                "--var and --var-file do not apply to a plan: its values are already decided",
                file=str(args.terraform_plan),
                fix="pass them to `terraform plan`, then export the plan again",
                code="EmulatorTerraformVariable",
            )
        tf = load_plan(args.terraform_plan, scope=scope)
    config = build_config(tf, args.gateway, now=datetime.now(UTC))
    if args.backend:
        config = with_backend_overrides(config, dict(args.backend))
    return config, tf.loaded.skipped
