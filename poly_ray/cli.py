"""The ``poly-ray`` command."""

from __future__ import annotations

import argparse
import logging
import os
import secrets
import sys
from pathlib import Path

from .errors import ConfigError

# The claims a token may limit (poly_ray.api.auth.SCOPE_CLAIMS; not imported: the CLI starts light).
TOKEN_SCOPES = ("tasks", "models", "memories", "memories_read")


class _Parser(argparse.ArgumentParser):
    """A usage error is one line and exit code 2 (argparse writes the whole usage first)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


def main(argv: list[str] | None = None) -> int:
    parser = _Parser(prog="poly-ray", description="Serve GGUF models as a Ray Serve graph.")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, help_ in (
        ("serve", "start the server (Ray starts locally unless RAY_ADDRESS names a cluster)"),
        ("check", "validate a config file and say what it configures"),
        ("prepare", "fetch or assemble every configured model file into the cache"),
        ("build", "write a Serve config (serve deploy) for this config's graph"),
        ("token", "mint an HS256 token with the config's jwt_private_key (or --new-secret: print a fresh secret)"),
    ):
        p = sub.add_parser(name, help=help_)
        p.add_argument("--config", "-c", help="TOML config (default: the embedded config.example.toml)")
        if name == "build":
            p.add_argument("--output", "-o", help="YAML file to write (default: stdout)")
            p.add_argument("--kuberay", action="store_true", help="write a KubeRay RayService manifest around it")
            p.add_argument("--allow-public", action="store_true",
                           help="with --kuberay: write it even though the config is public (anyone who reaches the "
                                "cluster's Service may use everything)")
        if name == "token":
            p.add_argument("--new-secret", action="store_true", help="print a random secret for jwt_private_key")
            p.add_argument("--sub", help="the token's subject (who it is for; shown in logs)")
            p.add_argument("--ttl", type=int, default=3600, help="seconds until it expires (default 3600)")
            for scope in TOKEN_SCOPES:
                p.add_argument(f"--{scope.replace('_', '-')}", metavar="A,B",
                               help=f"the only {scope.replace('_', ' (read) ')} it may use (none given: all; "
                                    "once one is given, the others default to none)")
    docs = sub.add_parser("docs", help="write the configuration reference from the config schema's descriptions")
    docs.add_argument("--output", "-o", default="docs/operations/configuration.md",
                      help="Markdown file to write, '-' for stdout (default: docs/operations/configuration.md, "
                           "from the repository's root)")
    from poly_ray.migrate.run import add_flags

    add_flags(sub.add_parser("run", help="serve one GGUF file with the Rust /stream server's flags, no config file",
                             description="Serve one model as the Rust /stream server did: -m FILE and its flags, "
                                         "with a default task; every API is served. -P is the port."))
    imp = sub.add_parser("import", help="write the TOML config that another server's config file stands for")
    imp.add_argument("kind", choices=["llm-api", "poly"], help="llm-api's config.yaml, or Poly's config.toml")
    imp.add_argument("file", help="the file to read")
    imp.add_argument("--output", "-o", help="TOML file to write (default: stdout)")
    chat = sub.add_parser("chat", help="chat with a task in the terminal, over its WebSocket session")
    chat.add_argument("task", nargs="?", help="the task (default: the server's only task)")
    chat.add_argument("--url", default=os.environ.get("POLY_RAY_URL", "http://127.0.0.1:8000"),
                      help="the server (default: $POLY_RAY_URL or http://127.0.0.1:8000)")
    chat.add_argument("--key", default=os.environ.get("POLY_RAY_KEY"),
                      help="API key or JWT (default: $POLY_RAY_KEY; the environment keeps it out of `ps`)")
    chat.add_argument("--history", metavar="FILE", help="keep the prompts' history in FILE (default: this session only)")
    args = parser.parse_args(argv)
    if args.command == "chat":
        import asyncio

        from poly_ray.client.chat import main as chat_main

        return asyncio.run(chat_main(args.url, args.task, args.key, args.history))
    if args.command == "import":  # reads another server's file, not a config
        from poly_ray.migrate.command import import_config

        return import_config(args.kind, args.file, args.output)
    if args.command == "docs":  # needs no config file: it documents them all
        from poly_ray.config.docs import reference

        if args.output == "-":
            sys.stdout.write(reference())
        else:

            Path(args.output).parent.mkdir(parents=True, exist_ok=True)
            Path(args.output).write_text(reference())
        return 0
    if args.command == "token" and args.new_secret:
        print(secrets.token_urlsafe(48))
        return 0
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    from poly_ray.migrate.preflight import not_toml

    from . import config as config_mod

    if args.command == "run":
        from poly_ray.migrate.run import run_config

        try:
            return _serve(run_config(args))
        except ConfigError as e:
            print(f"poly-ray run: {_one_line(e)}", file=sys.stderr)
            return 2
    path = config_mod.config_file(args.config)
    if problem := not_toml(path):
        print(f"poly-ray: {problem}", file=sys.stderr)
        return 2
    try:
        cfg = config_mod.load(path)
    except ConfigError as e:
        print(f"poly-ray: invalid config {path}: {_one_line(e)}", file=sys.stderr)
        return 2

    if args.command == "token":
        return _token(cfg, args)
    if args.command == "check":
        print(f"{path}: ok")
        print(f"  listens on {cfg.bind_address} ({'public' if cfg.public else 'credentials required'})")
        for name, m in cfg.models.items():
            print(f"  model {name}: {m.source} = {getattr(m, m.source)}, context {m.context_size}")
        for name, t in cfg.tasks.items():
            recall = f", recalls {t.memorization.retrieve} from memory {t.memorization.memory}" if t.memorization else ""
            print(f"  task {name}: model {t.model}, max_tokens {t.max_tokens}{recall}")
        for name, m in cfg.memories.items():
            where = m.store.path or f"{m.store.qdrant.url} collection {m.store.qdrant.collection}"
            print(f"  memory {name}: {m.search} search, embedding model {m.embedding_model}, store {where}")
        return 0
    if args.command == "prepare":
        from poly_ray.engine.sources import ModelSourceError, resolve

        try:
            for name, m in cfg.models.items():
                print(f"model {name}: {resolve(name, m, cfg.cache_path)}")
        except ModelSourceError as e:
            print(f"poly-ray: {e}", file=sys.stderr)
            return 1
        return 0
    if args.command == "build":
        import yaml

        from poly_ray.deploy.serve_config import SECRET_ENV, serve_config

        if args.kuberay and cfg.public and not args.allow_public:
            print("poly-ray build: the config is public (public = true), and a RayService listens on the pods' "
                  "addresses: set public = false (or POLY_PUBLIC=false) and give keys through the Secret, or pass "
                  "--allow-public", file=sys.stderr)
            return 2
        for name in SECRET_ENV:
            if name in os.environ:
                print(f"poly-ray build: {name} is not written into the Serve config; give it to the cluster's "
                      "processes in their environment (`ray start`'s, or the Kubernetes Secret)", file=sys.stderr)
        deploy = serve_config(cfg, args.config)
        if args.kuberay:
            import ray

            from poly_ray.config import default_state_dir
            from poly_ray.deploy.kuberay import rayservice

            # What lives on the head's disk and must survive it: the state store, the embedded memory stores.
            # A pod has no XDG_DATA_HOME: without a state_dir it uses the default, not this shell's.
            default = default_state_dir().expanduser()
            state = Path("~/.local/share/poly-ray") if cfg.state_dir == default else cfg.state_dir
            durable = [str(state.expanduser()), *(str(m.store.path) for m in cfg.memories.values() if m.store.path)]
            text = rayservice(deploy, ray.__version__, durable)
        else:
            text = "# Written by `poly-ray build`; deploy with `serve deploy <this file>`.\n"
            text += yaml.safe_dump(deploy, sort_keys=False)
        if args.output:
            with open(args.output, "w") as f:
                f.write(text)
        else:
            sys.stdout.write(text)
        return 0
    return _serve(cfg)


def _token(cfg, args) -> int:
    from poly_ray.api.auth import mint

    if not args.sub:
        print("poly-ray token: --sub NAME is required (who the token is for)", file=sys.stderr)
        return 2
    if args.ttl < 1:
        print("poly-ray token: --ttl must be at least 1 second", file=sys.stderr)
        return 2

    def names(value: str | None) -> list[str] | None:
        return None if value is None else [name for name in value.split(",") if name]

    scopes = {scope: names(getattr(args, scope)) for scope in TOKEN_SCOPES}
    try:
        print(mint(cfg, args.sub, args.ttl, scopes))
    except ConfigError as e:
        print(f"poly-ray token: {e}", file=sys.stderr)
        return 2
    return 0


def _one_line(e: ConfigError) -> str:
    return "; ".join(line.strip() for line in str(e).splitlines() if line.strip())


def _serve(cfg) -> int:
    from poly_ray.migrate.preflight import port_problem

    # Here, where Ray starts locally; a cluster's head (RAY_ADDRESS) listens elsewhere.
    if not os.environ.get("RAY_ADDRESS") and (problem := port_problem(cfg.host, cfg.port)):
        print(f"poly-ray: {problem}", file=sys.stderr)
        return 2
    import ray
    from ray import serve

    from poly_ray.serve.builder import build_app

    ray.init(address=os.environ.get("RAY_ADDRESS"))
    serve.start(http_options={"host": cfg.host, "port": cfg.port})
    app = build_app(cfg)
    logging.getLogger("poly_ray").info("serving on http://%s:%d", cfg.host, cfg.port)
    serve.run(app, name="poly-ray", route_prefix="/", blocking=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
