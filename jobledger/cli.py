"""The `ledger` command line: thin commands over the service built by `jobledger.bootstrap`.

Every command that prints data takes `--json`. Exit codes: 0 success, 1 the check failed
(e.g. `verify` found a broken event), 2 bad usage or configuration, 3 not found.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Sequence
from typing import Any
from uuid import UUID

import orjson

from jobledger.bootstrap import Service, build
from jobledger.projections_cli import add_commands as add_projection_commands
from jobledger.settings import Settings, SettingsError
from ledger.errors import (
    JobNotFound,
    KeyNotFound,
    LedgerError,
    StoreUnavailable,
    TenantNotFound,
)
from ledger.receipt import build_receipt, render_markdown
from ledger.story import explain, render
from ledger.timeline import timeline_entry
from projections.delivery_queue import DeliveryQueueProjection, list_deliveries
from storage.sql import SqlStore

EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_NOT_FOUND = 3


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "run"):
        parser.print_help()
        return EXIT_USAGE
    try:
        settings = Settings.from_env()
    except SettingsError as error:
        print(f"configuration error: {error}", file=sys.stderr)
        return EXIT_USAGE
    try:
        return int(args.run(settings, args))
    except (JobNotFound, TenantNotFound, KeyNotFound) as error:
        print(error.message, file=sys.stderr)
        return EXIT_NOT_FOUND
    except StoreUnavailable as error:
        print(f"{error.message} ({settings.database().redacted_url()})", file=sys.stderr)
        return EXIT_FAILED
    except LedgerError as error:
        print(error.message, file=sys.stderr)
        return EXIT_FAILED


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ledger", description="The publish-job ledger.")
    commands = parser.add_subparsers(title="commands")

    serve = commands.add_parser("serve", help="run the service")
    serve.add_argument("--host", default=None, help="address to bind (LEDGER_HOST)")
    serve.add_argument("--port", type=int, default=None, help="port to bind (LEDGER_PORT)")
    serve.add_argument(
        "--processes",
        type=int,
        default=None,
        help="serving processes for roles all/api, PostgreSQL only (LEDGER_PROCESSES)",
    )
    serve.add_argument(
        "--role",
        choices=["all", "api", "worker", "delivery", "projector"],
        default="all",
        help="which part of the service this process runs",
    )
    serve.set_defaults(run=_serve)

    verify = commands.add_parser(
        "verify", help="recompute every hash chain and the log digest (audit integrity)"
    )
    verify.add_argument("--json", action="store_true", help="print the report as JSON")
    verify.set_defaults(run=_verify)

    audit = commands.add_parser("audit", help="audit log maintenance").add_subparsers()
    checkpoint = audit.add_parser("checkpoint", help="store a checkpoint of the log digest now")
    checkpoint.add_argument("--json", action="store_true")
    checkpoint.set_defaults(run=_checkpoint)

    jobs = commands.add_parser("jobs", help="inspect jobs").add_subparsers()
    timeline = jobs.add_parser("timeline", help="a job's events, oldest first")
    timeline.add_argument("job_id", type=_uuid, help="the job's id")
    timeline.add_argument("--json", action="store_true", help="print the events as JSON")
    timeline.set_defaults(run=_timeline)
    explain = jobs.add_parser(
        "explain", help="a job's story in plain sentences, with the webhooks it caused"
    )
    explain.add_argument("job_id", type=_uuid, help="the job's id")
    explain.add_argument("--json", action="store_true", help="print the sentences as JSON")
    explain.set_defaults(run=_explain)
    receipt = jobs.add_parser("receipt", help="a job's receipt, to forward to a client")
    receipt.add_argument("job_id", type=_uuid, help="the job's id")
    receipt.add_argument("--format", choices=("md", "json"), default="md")
    receipt.add_argument("--json", action="store_true", help="the same as --format json")
    receipt.set_defaults(run=_receipt)

    tenants = commands.add_parser("tenants", help="manage tenants").add_subparsers()
    tenant_create = tenants.add_parser(
        "create", help="create a tenant and its first writer key (the key is shown once)"
    )
    tenant_create.add_argument("name", help="the tenant's name")
    tenant_create.add_argument("--json", action="store_true", help="print the result as JSON")
    tenant_create.set_defaults(run=_tenants_create)

    keys = commands.add_parser("keys", help="manage API keys").add_subparsers()
    key_create = keys.add_parser("create", help="issue an API key (shown once)")
    owner = key_create.add_mutually_exclusive_group(required=True)
    owner.add_argument("--tenant", type=_uuid, help="the tenant the key belongs to")
    owner.add_argument("--admin", action="store_true", help="an admin key (all tenants)")
    key_create.add_argument(
        "--role", choices=["writer", "reader"], default="writer", help="a tenant key's role"
    )
    key_create.add_argument("--label", default=None, help="a note on what the key is for")
    key_create.add_argument("--json", action="store_true", help="print the key as JSON")
    key_create.set_defaults(run=_keys_create)
    add_projection_commands(commands)

    demo = commands.add_parser(
        "demo",
        help="the whole flow on a fresh SQLite file: the service, a webhook receiver, sandbox "
        "jobs and their signed webhooks, then the console URL and a key",
    )
    demo.add_argument("--dir", default=None, help="keep the data here (default: a temporary one)")
    demo.add_argument("--exit", action="store_true", help="stop everything after the summary")
    demo.add_argument(
        "--timeout", type=float, default=60.0, help="seconds to wait for everything (60)"
    )
    demo.add_argument("--json", action="store_true", help="print the summary as JSON")
    demo.set_defaults(run=_demo)
    return parser


def _uuid(value: str) -> UUID:
    try:
        return UUID(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a job id (a UUID)") from None


def _with_service(settings: Settings) -> Service:
    return build(settings)


def _print_json(data: Any) -> None:
    sys.stdout.write(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode() + "\n")


def _serve(settings: Settings, args: argparse.Namespace) -> int:
    from jobledger.serve import serve

    if args.processes is not None:
        if args.processes < 1:
            print("ledger: --processes must be at least 1", file=sys.stderr)
            return 2
        settings = dataclasses.replace(settings, processes=args.processes)
    return serve(settings, host=args.host, port=args.port, role=args.role)


def _demo(settings: Settings, args: argparse.Namespace) -> int:
    from jobledger.demo import demo  # starts its own service: see jobledger/demo.py

    return demo(data_dir=args.dir, exit_after=args.exit, timeout=args.timeout, as_json=args.json)


def _verify(settings: Settings, args: argparse.Namespace) -> int:
    service = _with_service(settings)
    try:
        report = service.ledger.verify()
    finally:
        service.close()
    if args.json:
        _print_json(report.as_dict())
    else:
        print(report.summary())
    return 0 if report.ok else EXIT_FAILED


def _checkpoint(settings: Settings, args: argparse.Namespace) -> int:
    service = _with_service(settings)
    try:
        checkpoint = service.ledger.write_checkpoint()
    finally:
        service.close()
    if args.json:
        _print_json(
            None
            if checkpoint is None
            else {
                "position": checkpoint.position,
                "count": checkpoint.count,
                "digest": checkpoint.digest,
            }
        )
    elif checkpoint is None:
        print("No new events since the last checkpoint.")
    else:
        print(
            f"Checkpoint: {checkpoint.count} events up to position {checkpoint.position}, "
            f"digest {checkpoint.digest}"
        )
    return 0


def _timeline(settings: Settings, args: argparse.Namespace) -> int:
    service = _with_service(settings)
    try:
        entries = [timeline_entry(e) for e in service.ledger.job_events(args.job_id)]
    finally:
        service.close()
    if args.json:
        _print_json({"job_id": str(args.job_id), "events": entries})
        return 0
    for entry in entries:
        head = f"v{entry['version']:<3} {entry['occurred_at']}  {entry['type']:<20}"
        print(f"{head} by {entry['actor']}")
        for key, value in entry["data"].items():
            if value not in (None, {}, []):
                print(f"       {key}: {_short(value)}")
    return 0


def _explain(settings: Settings, args: argparse.Namespace) -> int:
    service = _with_service(settings)
    store = SqlStore(service.database, max_connections=1)
    try:
        events = service.ledger.job_events(args.job_id)
        with store.transaction() as tx:
            DeliveryQueueProjection(service.ledger).create_tables(tx)  # a fresh database
            page = list_deliveries(tx, job_id=str(args.job_id), limit=1000)
        deliveries = [
            list(service.ledger.events.get(UUID(orjson.loads(doc)["id"]))) for doc in page.docs
        ]
    finally:
        store.close()
        service.close()
    sentences = explain(events, deliveries)
    if args.json:
        _print_json({"job_id": str(args.job_id), "story": [s.as_dict() for s in sentences]})
    else:
        print(render(sentences))
    return 0


def _receipt(settings: Settings, args: argparse.Namespace) -> int:
    service = _with_service(settings)
    try:
        job = service.ledger.get_job(args.job_id)
        receipt = build_receipt(job, service.ledger.job_events(args.job_id))
    finally:
        service.close()
    if args.json or args.format == "json":
        _print_json(receipt)
    else:
        print(render_markdown(receipt))
    return 0


CLI_ACTOR = "cli"


def _tenants_create(settings: Settings, args: argparse.Namespace) -> int:
    service = _with_service(settings)
    try:
        created = service.ledger.create_tenant(args.name, actor=CLI_ACTOR)
    finally:
        service.close()
    data = {**created.tenant.describe(), "key": created.first_key.describe()}
    if args.json:
        _print_json(data)
    else:
        print(f"Tenant {data['id']} ({data['name']}) created.")
        print(f"Writer key {data['key']['id']}; its token is shown only now:")
        print(data["key"]["token"])
    return 0


def _keys_create(settings: Settings, args: argparse.Namespace) -> int:
    service = _with_service(settings)
    try:
        if args.admin:
            issued = service.ledger.create_admin_key(label=args.label, actor=CLI_ACTOR)
        else:
            issued = service.ledger.issue_key(
                args.tenant, role=args.role, label=args.label, actor=CLI_ACTOR
            )
    finally:
        service.close()
    data = issued.describe()
    if args.json:
        _print_json(data)
    else:
        owner = "admin (all tenants)" if args.admin else f"{data['role']} of tenant {args.tenant}"
        print(f"Key {data['id']}: {owner}. Its token is shown only now:")
        print(data["token"])
    return 0


def _short(value: Any) -> str:
    text = value if isinstance(value, str) else orjson.dumps(value).decode()
    return text if len(text) <= 120 else text[:117] + "..."


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
